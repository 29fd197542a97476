//! The highest stitched step of runs being forked, read once per metrics
//! version: the forks of a sweep arrive together, most of them of one
//! parent, and each used to run its own scan (and build its own session)
//! to check its step, which made forks four times as costly as creates.
//!
//! A run's lineage is fixed when it is created and a metrics table version
//! pins every point, so the answer for `(run, version)` never changes; forks
//! asking for it while it is being read wait for that one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::kernel::Version;
use tokio::sync::OnceCell;

use crate::catalog::run::RunId;
use crate::error::Result;

/// Entries kept before the memo starts over (each is a few dozen bytes).
const MAX_ENTRIES: usize = 4096;

type Cell = Arc<OnceCell<Option<u64>>>;

/// Max steps by run, each as of one metrics version.
#[derive(Debug, Default)]
pub(super) struct ForkSteps(Mutex<HashMap<RunId, (Option<Version>, Cell)>>);

impl ForkSteps {
    /// The max step of `run` as of metrics `version`: read by `read` once,
    /// shared by every caller asking while or after it is read. A failed
    /// read is not kept: the next caller reads again.
    pub(super) async fn get<F, Fut>(
        &self,
        run: RunId,
        version: Option<Version>,
        read: F,
    ) -> Result<Option<u64>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<u64>>>,
    {
        let cell = {
            let mut memo = self.0.lock().expect("fork step memo poisoned");
            match memo.get(&run) {
                Some((held, cell)) if *held == version => cell.clone(),
                _ => {
                    if memo.len() >= MAX_ENTRIES {
                        memo.clear();
                    }
                    let cell = Cell::default();
                    memo.insert(run, (version, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_try_init(read).await.copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_askers_share_one_read_per_version_and_a_failure_is_not_kept() {
        let steps = ForkSteps::default();
        let reads = AtomicUsize::new(0);
        let read = |answer: Option<u64>| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(answer)
            }
        };
        let (a, b, c) = tokio::join!(
            steps.get(1, Some(3), read(Some(99))),
            steps.get(1, Some(3), read(Some(99))),
            steps.get(1, Some(3), read(Some(99))),
        );
        assert_eq!(
            (a.unwrap(), b.unwrap(), c.unwrap()),
            (Some(99), Some(99), Some(99))
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A newer metrics version is read anew.
        assert_eq!(
            steps.get(1, Some(4), read(Some(120))).await.unwrap(),
            Some(120)
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A failed read is answered as such and read again next time.
        let failed = steps
            .get(2, Some(4), || async {
                Err(crate::error::Error::Internal("io".into()))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(steps.get(2, Some(4), read(None)).await.unwrap(), None);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }
}
