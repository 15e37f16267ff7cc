//! A real `docker-registry` on a free loopback port for push tests: kiln-testkit's.

// Only the test binaries that push use it.
#![allow(unused_imports)]

pub use kiln_testkit::Registry;
