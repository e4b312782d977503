//! The timing loop the plain micro benches share: five rounds of `iterations`
//! calls, the best and the median round in µs per call.

use std::time::Instant;

const ROUNDS: usize = 5;

/// Prints `label` with the best and the median round of `f`, in µs per call.
pub fn time(label: &str, iterations: u32, mut f: impl FnMut()) {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations));
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "{label:<48} best {:>8.2} µs  median {:>8.2} µs",
        rounds[0],
        rounds[ROUNDS / 2]
    );
}
