//! Runs one build-step process inside an isolated Linux container whose root is a snapshot.
