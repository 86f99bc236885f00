//! Rows accumulated across cells before they go to the sink as one batch: fewer, larger batches
//! make Parquet encoding cheaper and the column builders are allocated once per batch.

use arrow_array::RecordBatch;

use crate::schema::MessageBatchBuilder;

/// The batch being built.
pub struct Batcher {
    /// The rows so far.
    pub builder: MessageBatchBuilder,
    /// Page bytes behind them.
    pub bytes: usize,
}

impl Batcher {
    /// Rows per batch at most.
    pub const ROWS: usize = 4096;
    /// Page bytes per batch at most.
    pub const BYTES: usize = 2 << 20;

    /// An empty batch sized for [`Self::ROWS`] rows.
    pub fn new() -> Self {
        Batcher {
            builder: MessageBatchBuilder::with_capacity(Self::ROWS, Self::BYTES),
            bytes: 0,
        }
    }

    /// True when the batch should go.
    pub fn full(&self) -> bool {
        self.builder.len() >= Self::ROWS || self.bytes >= Self::BYTES
    }

    /// The rows so far, if any (the builder restarts sized like them).
    pub fn take(&mut self) -> Option<RecordBatch> {
        self.bytes = 0;
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }
}
