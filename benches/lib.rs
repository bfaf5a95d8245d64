//! Criterion benchmarks of ringmatch and the baselines they are compared with.
//!
//! The benchmarks live in the `[[bench]]` targets of this package (`cargo bench -p
//! ringmatch-benches`); this library only holds what they share. The workloads themselves come
//! from `ringmatch_matcher::workload`, so `ringmatch bench` and these benches measure the same
//! command streams. Nothing here is used by the service.

use ringmatch_matcher::workload::{exchange_core_mix, MixShape, Workload};

/// The exchange-core mix used by the matcher benches: `commands_count` commands, seed 1.
pub fn matcher_workload(commands_count: usize) -> Workload {
    exchange_core_mix(commands_count, 1, MixShape::default())
}
