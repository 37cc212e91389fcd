//! Harness for end-to-end tests: starts real binaries and servers on free ports.
