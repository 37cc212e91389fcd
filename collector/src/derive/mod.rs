//! Derivations without I/O: availability over periods, counts per МО and site, the regional
//! indicator table.
