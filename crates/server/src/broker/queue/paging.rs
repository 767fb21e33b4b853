//! Messages that wait outside memory: the queue's state spills ready messages past its
//! window to the node's spill directory, and reads back what could not be read (a spill
//! or store read that failed) after a pause, until a record proves unreadable.

use super::*;
use broker_store::spill::QueueSpills;

/// How long a queue waits before it reads again what it could not read back (a spill
/// or store read that failed).
const READ_RETRY: Duration = Duration::from_secs(1);
/// Reads of one stored message before it is taken for unreadable.
const READ_ATTEMPTS: u32 = 3;

/// A queue's state that spills ready messages past its window to the node's spill
/// directory (when the node has a store).
pub(super) fn spilling(
    mut state: QueueState<ConsumerHandle>,
    node: &Node,
    name: &str,
) -> QueueState<ConsumerHandle> {
    if let Some(dir) = &node.spills {
        state.set_spills(
            Arc::new(QueueSpills::new(dir.clone(), name)),
            WINDOW_MESSAGES,
            WINDOW_BYTES,
        );
    }
    state
}

impl QueueActor {
    /// Messages that could not be read back (a spill or store read failed) wait in the
    /// queue; reading is tried again after [`READ_RETRY`]. Damaged spilled records were
    /// reported by the spill and are counted out here.
    pub(super) fn schedule_read_retry(&mut self, ctx: &mut Context<Self>) {
        let lost = self.state.take_spill_losses();
        if lost.count > 0 {
            tracing::error!(queue = %self.name, lost = lost.count, "messages lost to a damaged spill file");
        }
        if self.read_retry || !(self.state.spills_stalled() || self.page_in_failed) {
            return;
        }
        self.read_retry = true;
        ctx.run_later(READ_RETRY, |a, ctx| {
            a.read_retry = false;
            a.page_in_failed = false;
            a.operate(ctx, |a, _| {
                a.state.retry_spills();
                a.drain();
            });
        });
    }

    /// A stored message could not be read back. A read that fails may succeed later
    /// (an I/O error): it is tried again after [`READ_RETRY`], up to [`READ_ATTEMPTS`]
    /// times; then the record is taken for unreadable, reported once and lost, and the
    /// queue goes on with the rest. Returns whether to try again.
    pub(super) fn read_failed(&mut self, persist_id: u64, e: &str) -> bool {
        let n = if self.failed_read.0 == persist_id {
            self.failed_read.1 + 1
        } else {
            1
        };
        self.failed_read = (persist_id, n);
        if n < READ_ATTEMPTS {
            tracing::warn!(queue = %self.name, persist_id, attempt = n, "cannot read a stored message back, retrying: {e}");
            self.page_in_failed = true;
            return true;
        }
        tracing::error!(queue = %self.name, persist_id, "a stored message cannot be read back and is lost: {e}");
        false
    }
}
