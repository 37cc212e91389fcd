//! dozor agent library.
