//! `flint bench`: benchmarks (in progress).
