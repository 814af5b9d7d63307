//! Batch sizing against device memory (risk R2): the batch a device runs is capped by the memory
//! it has free, halved when the device still runs out, and doubled back once it has run well for
//! a while and the memory is there.
//!
//! Pure data: free memory is an argument (`device_memory::free_bytes` reads it: NVML on CUDA, a
//! configured budget on the CPU), so every rule is unit-tested without a device.

/// The batch limit of one device.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    max_batch: usize,
    /// The limit learnt from out-of-memory errors: halved on each, doubled back over time.
    learnt: usize,
    frame_bytes: u64,
    grow_after: u32,
    /// Good batches since the limit last changed.
    good_batches: u32,
}

impl BatchSizer {
    pub fn new(max_batch: usize, frame_bytes: u64, grow_after: u32) -> Self {
        let max_batch = max_batch.max(1);
        Self {
            max_batch,
            learnt: max_batch,
            frame_bytes: frame_bytes.max(1),
            grow_after: grow_after.max(1),
            good_batches: 0,
        }
    }

    /// Frames the next model call may take with `free` bytes of device memory (`None`: unknown).
    /// Never below 1: a single frame is always tried.
    pub fn limit(&self, free: Option<u64>) -> usize {
        let fits = free.map_or(usize::MAX, |free| usize::try_from(free / self.frame_bytes).unwrap_or(usize::MAX));
        self.learnt.min(fits).max(1)
    }

    /// The learnt limit, without regard to free memory.
    pub fn learnt(&self) -> usize {
        self.learnt
    }

    /// A call of `tried` frames ran out of memory: the limit becomes half of it. Returns the new
    /// limit; `None` when a single frame already failed (nothing left to halve).
    pub fn on_out_of_memory(&mut self, tried: usize) -> Option<usize> {
        self.good_batches = 0;
        if tried <= 1 {
            return None;
        }
        self.learnt = (tried / 2).max(1);
        Some(self.learnt)
    }

    /// A call succeeded. After `grow_after` in a row below the maximum, the limit doubles if
    /// `free` memory holds the larger batch (or is unknown). Returns the new limit when it grew.
    pub fn on_success(&mut self, free: Option<u64>) -> Option<usize> {
        if self.learnt >= self.max_batch {
            return None;
        }
        self.good_batches = self.good_batches.saturating_add(1);
        if self.good_batches < self.grow_after {
            return None;
        }
        let next = (self.learnt * 2).min(self.max_batch);
        if free.is_some_and(|free| free / self.frame_bytes < next as u64) {
            return None;
        }
        self.learnt = next;
        self.good_batches = 0;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn the_batch_fits_free_memory_and_never_drops_below_one() {
        let sizer = BatchSizer::new(8, 64 * MB, 10);
        assert_eq!(sizer.limit(None), 8, "unknown memory: the configured maximum");
        assert_eq!(sizer.limit(Some(1024 * MB)), 8);
        assert_eq!(sizer.limit(Some(200 * MB)), 3);
        assert_eq!(sizer.limit(Some(10 * MB)), 1, "a single frame is always tried");
    }

    #[test]
    fn out_of_memory_halves_the_tried_batch_down_to_one() {
        let mut sizer = BatchSizer::new(8, 64 * MB, 10);
        assert_eq!(sizer.on_out_of_memory(8), Some(4));
        assert_eq!(sizer.limit(None), 4);
        assert_eq!(sizer.on_out_of_memory(3), Some(1), "halves what was tried, not the old limit");
        assert_eq!(sizer.on_out_of_memory(1), None, "one frame cannot be halved");
    }

    #[test]
    fn the_batch_grows_back_after_good_batches_when_memory_allows() {
        let mut sizer = BatchSizer::new(8, 64 * MB, 3);
        sizer.on_out_of_memory(8);
        sizer.on_out_of_memory(4);
        assert_eq!(sizer.learnt(), 2);
        assert_eq!(sizer.on_success(None), None);
        assert_eq!(sizer.on_success(None), None);
        assert_eq!(sizer.on_success(None), Some(4));
        // Memory for 4 frames only: it stays at 4 however long it runs well.
        for _ in 0..10 {
            assert_eq!(sizer.on_success(Some(300 * MB)), None);
        }
        assert_eq!(sizer.on_success(Some(600 * MB)), Some(8));
        assert_eq!(sizer.on_success(None), None, "never above the maximum");
        assert_eq!(sizer.learnt(), 8);
    }

    #[test]
    fn an_error_restarts_the_count_of_good_batches() {
        let mut sizer = BatchSizer::new(8, MB, 3);
        sizer.on_out_of_memory(8);
        sizer.on_success(None);
        sizer.on_success(None);
        sizer.on_out_of_memory(4);
        assert_eq!(sizer.on_success(None), None);
        assert_eq!(sizer.on_success(None), None);
        assert_eq!(sizer.on_success(None), Some(4));
    }
}
