//! The benches' full/smoke switch (benches/common/run_mode.rs): its unit tests run here, since
//! a harness-less bench binary runs no `#[test]`.

#[path = "../benches/common/run_mode.rs"]
mod run_mode;
