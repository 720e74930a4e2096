//! Running the lines of a file concurrently where their order cannot matter, in file order where
//! it can, and answering them in file order: how `submit` and `log append` import a history.
//! One line at a time paid one fsync each (4.2k commands/s); with lines in flight, the log's
//! group commit makes one fsync for many.
//!
//! Each job names what it must come after: `Order::After(key)` runs after every earlier job with
//! the same key (a contract, a stream) and after the last barrier; `Order::Barrier` (a command
//! that is not about one contract, such as `publish_rates`) runs after every earlier job, and
//! every later job runs after it. Not here: what a line means, or how it is answered.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::watch;

/// What a job must come after.
pub enum Order {
    /// Every earlier job with this key, and the last barrier.
    After(String),
    /// Every earlier job; every later job comes after it.
    Barrier,
    /// Nothing: its answer is known already (a line that does not parse).
    Free,
}

/// A job's work.
pub type Job<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `jobs` (at most `max_in_flight` at once) and hands each answer to `emit` in the jobs'
/// order. `emit` returns `false` to stop taking new jobs (a failure): the jobs in flight finish
/// and are emitted, and the run ends. `progress` hears each answer emitted.
///
/// # Errors
/// An error of `jobs` (reading the input) or of `emit` (writing the output); the jobs in flight
/// finish first.
pub fn run_ordered<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    max_in_flight: usize,
    jobs: impl Iterator<Item = anyhow::Result<(Order, Job<T>)>>,
    mut emit: impl FnMut(T) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    runtime.block_on(async {
        let mut in_flight: FuturesOrdered<tokio::task::JoinHandle<T>> = FuturesOrdered::new();
        let mut last: HashMap<String, watch::Receiver<bool>> = HashMap::new();
        let mut barrier: Option<watch::Receiver<bool>> = None;
        let mut taking = true;
        let mut failed: Option<anyhow::Error> = None;
        let mut jobs = jobs;
        loop {
            while taking && in_flight.len() < max_in_flight.max(1) {
                let Some(job) = jobs.next() else {
                    taking = false;
                    break;
                };
                let (order, work) = match job {
                    Ok(job) => job,
                    Err(error) => {
                        failed = Some(error);
                        taking = false;
                        break;
                    }
                };
                let (done, done_rx) = watch::channel(false);
                let after: Vec<watch::Receiver<bool>> = match order {
                    Order::Free => Vec::new(),
                    Order::After(key) => {
                        let before = last
                            .insert(key, done_rx)
                            .into_iter()
                            .chain(barrier.clone())
                            .collect();
                        // Keys of finished jobs need no remembering.
                        if last.len() > 4 * max_in_flight.max(1) {
                            last.retain(|_, rx| !*rx.borrow());
                        }
                        before
                    }
                    Order::Barrier => {
                        let before = last.drain().map(|(_, rx)| rx).chain(barrier.take());
                        let before = before.collect();
                        barrier = Some(done_rx);
                        before
                    }
                };
                in_flight.push_back(tokio::spawn(async move {
                    for mut earlier in after {
                        // A dropped sender finished too (its task ended).
                        let _ = earlier.wait_for(|finished| *finished).await;
                    }
                    let answer = work.await;
                    let _ = done.send(true);
                    answer
                }));
            }
            let Some(answer) = in_flight.next().await else {
                break;
            };
            let answer = answer.map_err(|e| anyhow::anyhow!("a job panicked: {e}"))?;
            match emit(answer) {
                Ok(true) => {}
                Ok(false) => taking = false,
                Err(error) => {
                    failed.get_or_insert(error);
                    taking = false;
                }
            }
        }
        failed.map_or(Ok(()), Err)
    })
}

/// Progress of a long run on stderr, when stderr is a terminal (nothing otherwise): lines done,
/// the rate, and with a known input size, the share read and the time left. Redrawn at most
/// four times a second; `finish` clears it.
pub struct Progress {
    noun: &'static str,
    shown: bool,
    started: Instant,
    drawn: Option<Instant>,
    total_bytes: Option<u64>,
}

impl Progress {
    /// A progress line counting `noun` (plural), of an input of `total_bytes` (when known).
    pub fn new(noun: &'static str, total_bytes: Option<u64>) -> Progress {
        use std::io::IsTerminal;
        Progress {
            noun,
            shown: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
            total_bytes,
        }
    }

    /// `lines` done, `bytes` of the input read so far.
    pub fn update(&mut self, lines: u64, bytes: u64) {
        if !self.shown
            || self
                .drawn
                .is_some_and(|at| at.elapsed() < Duration::from_millis(250))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        // Whole numbers: no float in this binary (rates are counts, shares whole percents).
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let rate = lines.saturating_mul(1000) / millis.max(1);
        let noun = match (lines, self.noun.strip_suffix('s')) {
            (1, Some(one)) => one,
            _ => self.noun,
        };
        let mut text = format!("{} {noun} · {}/s", thousands(lines), thousands(rate));
        if let Some(total) = self.total_bytes.filter(|t| *t > 0 && bytes > 0) {
            let bytes = bytes.min(total);
            let left_seconds = millis.saturating_mul(total - bytes) / bytes / 1000;
            text += &format!(
                " · {} % · {} left",
                bytes.saturating_mul(100) / total,
                duration_text(left_seconds)
            );
        }
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{text}");
        let _ = stderr.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown && self.drawn.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// A whole number with thousands separators: `253,744`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{}:{:02}", s / 60, s % 60),
        s => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(253_744), "253,744");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// Jobs of one key run one after another in input order, a barrier waits for all before it
    /// and holds back all after it, and answers come in input order however long each takes.
    #[test]
    fn order_is_kept_where_it_matters_and_answers_come_in_input_order() {
        use std::sync::{Arc, Mutex};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        // (key, name, milliseconds it takes); "*" is a barrier.
        let plan = [
            ("a", "a1", 30),
            ("b", "b1", 1),
            ("a", "a2", 1),
            ("b", "b2", 20),
            ("*", "rates", 1),
            ("a", "a3", 1),
            ("c", "c1", 1),
        ];
        let jobs = plan.iter().map(|&(key, name, millis)| {
            let log = log.clone();
            let order = match key {
                "*" => Order::Barrier,
                key => Order::After(key.to_owned()),
            };
            let work: Job<String> = Box::pin(async move {
                log.lock().unwrap().push(format!("start {name}"));
                tokio::time::sleep(Duration::from_millis(millis)).await;
                log.lock().unwrap().push(format!("end {name}"));
                name.to_owned()
            });
            Ok((order, work))
        });
        let mut answers = Vec::new();
        run_ordered(&runtime, 4, jobs, |answer| {
            answers.push(answer);
            Ok(true)
        })
        .unwrap();
        assert_eq!(answers, ["a1", "b1", "a2", "b2", "rates", "a3", "c1"]);
        let log = log.lock().unwrap();
        let at = |entry: &str| log.iter().position(|e| e == entry).unwrap();
        assert!(at("end a1") < at("start a2"), "{log:?}");
        assert!(at("end b1") < at("start b2"), "{log:?}");
        assert!(at("start b1") < at("end a1"), "b runs beside a: {log:?}");
        for earlier in ["a1", "b1", "a2", "b2"] {
            assert!(at(&format!("end {earlier}")) < at("start rates"), "{log:?}");
        }
        for later in ["a3", "c1"] {
            assert!(at("end rates") < at(&format!("start {later}")), "{log:?}");
        }
    }
}
