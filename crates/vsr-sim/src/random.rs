//! The simulator's one source of randomness: a pinned xoshiro256++ seeded from the seed.
//!
//! Every decision of a run (the fault mix, latencies, which replica crashes, what the clients
//! ask) is drawn from one stream in event order, so a seed replays bit for bit. Probabilities
//! are integers in parts per million: no floating point reaches a decision.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// One million: a probability of 1 in [`Prng::chance`].
pub(crate) const PPM: u32 = 1_000_000;

/// The seeded generator with the few draws the simulator needs.
#[derive(Clone, Debug)]
pub(crate) struct Prng(Xoshiro256PlusPlus);

impl Prng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..count`.
    pub(crate) fn below(&mut self, count: u64) -> u64 {
        assert!(count > 0);
        self.next_u64() % count
    }

    /// A number in `min..=max`.
    pub(crate) fn range(&mut self, min: u64, max: u64) -> u64 {
        assert!(min <= max);
        min + self.below(max - min + 1)
    }

    /// An index into a slice of `len` elements.
    pub(crate) fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `ppm` / 1,000,000. A probability of 0 draws nothing.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(u64::from(PPM)) < u64::from(ppm)
    }

    /// One of `choices`.
    pub(crate) fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.index(choices.len())]
    }
}
