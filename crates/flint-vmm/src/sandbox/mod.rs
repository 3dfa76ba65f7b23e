//! What limits flint itself, so that a guest that took over a flint thread could do almost
//! nothing: [`seccomp`] filters per thread kind.

pub mod seccomp;
