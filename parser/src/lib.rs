//! Dockerfile syntax for kiln: directives, instructions, heredocs and the shell-word lexer,
//! reproducing BuildKit's frontend/dockerfile/parser. Knows nothing of files or images.
