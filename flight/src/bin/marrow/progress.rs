//! Progress bars for long imports and exports.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use indicatif::ProgressBar;

pub fn byte_bar(total: u64) -> Result<ProgressBar> {
    Ok(ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})",
        )?,
    ))
}

/// Show `counter` on `bar` until the returned handle is aborted.
fn tick(bar: &ProgressBar, counter: &Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let (bar, counter) = (bar.clone(), counter.clone());
    tokio::spawn(async move {
        loop {
            bar.set_position(counter.load(Ordering::Relaxed));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
}

/// Run `work` with the counter it is given shown on `bar`, then clear the bar.
pub async fn with_progress<T, F: Future<Output = T>>(
    bar: ProgressBar,
    work: impl FnOnce(Arc<AtomicU64>) -> F,
) -> T {
    let counter = Arc::new(AtomicU64::new(0));
    let ticker = tick(&bar, &counter);
    let result = work(counter).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}
