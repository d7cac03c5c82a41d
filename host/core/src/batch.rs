//! Adaptive batch sizing: grow while batches finish under the latency target, shrink when
//! they do not, within bounds.

use std::time::Duration;

/// Bounds and target for one stage's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    pub min: usize,
    pub max: usize,
    pub initial: usize,
    /// A batch that takes longer than this shrinks the next one.
    pub target: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            min: 1,
            max: 5_000,
            initial: 500,
            target: Duration::from_millis(250),
        }
    }
}

impl BatchConfig {
    /// A fixed batch size (the benchmark's per-record mode uses 1).
    pub fn fixed(size: usize) -> Self {
        let size = size.max(1);
        Self {
            min: size,
            max: size,
            initial: size,
            ..Self::default()
        }
    }
}

/// The current size of one stage's batches for one model.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    config: BatchConfig,
    size: usize,
}

impl BatchSizer {
    pub fn new(config: BatchConfig) -> Self {
        let size = config.initial.clamp(config.min.max(1), config.max.max(1));
        Self { config, size }
    }

    /// The size to lease next.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Records how a batch went. Only full batches grow the size: a short batch says
    /// nothing about what a bigger one would cost.
    pub fn observe(&mut self, records: usize, took: Duration) -> usize {
        let target = self.config.target;
        if took > target {
            self.size = (self.size / 2).max(self.config.min.max(1));
        } else if records >= self.size && took < target / 2 {
            self.size = (self.size * 2).min(self.config.max.max(1));
        }
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_under_target_and_shrinks_over_it() {
        let mut s = BatchSizer::new(BatchConfig {
            min: 10,
            max: 1000,
            initial: 100,
            target: Duration::from_millis(100),
        });
        assert_eq!(s.observe(100, Duration::from_millis(10)), 200);
        assert_eq!(s.observe(50, Duration::from_millis(10)), 200, "short batch");
        assert_eq!(s.observe(200, Duration::from_millis(300)), 100);
        for _ in 0..10 {
            s.observe(s.size(), Duration::from_millis(1));
        }
        assert_eq!(s.size(), 1000);
        for _ in 0..10 {
            s.observe(s.size(), Duration::from_secs(1));
        }
        assert_eq!(s.size(), 10);
    }
}
