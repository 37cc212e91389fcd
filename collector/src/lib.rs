//! dozor collector library.
