use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// Records every refresh and answers "again after `every`" a fixed number
/// of times.
struct Recorder {
    calls: Mutex<Vec<(String, Instant)>>,
    every: Duration,
    rounds: usize,
}

impl Refresher<Item> for Recorder {
    async fn refresh(&self, volume: Item) -> Option<Instant> {
        let mut calls = self.calls.lock().unwrap();
        calls.push((volume.as_str().to_owned(), Instant::now()));
        let seen = calls.iter().filter(|(v, _)| v == volume.as_str()).count();
        (seen < self.rounds).then(|| Instant::now() + self.every)
    }
}

/// The scheduler is generic over its key; the tests key by name.
type Item = String;

fn id(s: &str) -> Item {
    s.to_owned()
}

fn start(
    every: Duration,
    rounds: usize,
) -> (RefreshScheduler<Item>, Arc<Recorder>, CancellationToken) {
    let (scheduler, task) = RefreshScheduler::new(Slots {
        total: 4,
        per_namespace: 4,
    });
    let recorder = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        every,
        rounds,
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(task.run(Arc::clone(&recorder), shutdown.clone(), TaskTracker::new()));
    (scheduler, recorder, shutdown)
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Deadlines fire in order, at their time, and each refresh's answer
/// becomes the next deadline.
#[tokio::test(start_paused = true)]
async fn fires_at_deadlines_and_follows_the_refreshers_answer() {
    let t0 = Instant::now();
    let (scheduler, recorder, _stop) = start(Duration::from_secs(100), 3);
    scheduler.schedule(id("b"), t0 + Duration::from_secs(20));
    scheduler.schedule(id("a"), t0 + Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(1000)).await;
    settle().await;
    let calls = recorder.calls.lock().unwrap().clone();
    let offsets: Vec<(String, u64)> = calls
        .iter()
        .map(|(v, at)| (v.clone(), (*at - t0).as_secs()))
        .collect();
    assert_eq!(
        offsets,
        vec![
            ("a".into(), 10),
            ("b".into(), 20),
            ("a".into(), 110),
            ("b".into(), 120),
            ("a".into(), 210),
            ("b".into(), 220),
        ]
    );
}

/// Rescheduling replaces the old deadline and cancelling removes it.
#[tokio::test(start_paused = true)]
async fn reschedule_replaces_and_cancel_removes() {
    let t0 = Instant::now();
    let (scheduler, recorder, _stop) = start(Duration::from_secs(100), 1);
    scheduler.schedule(id("a"), t0 + Duration::from_secs(50));
    scheduler.schedule(id("a"), t0 + Duration::from_secs(5));
    scheduler.schedule(id("gone"), t0 + Duration::from_secs(7));
    scheduler.cancel(id("gone"));
    tokio::time::sleep(Duration::from_secs(200)).await;
    settle().await;
    let calls = recorder.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "a");
    assert_eq!((calls[0].1 - t0).as_secs(), 5);
}

/// Nothing runs while nothing is due: the task sleeps instead of polling.
#[tokio::test(start_paused = true)]
async fn idle_scheduler_does_nothing() {
    let (scheduler, recorder, stop) = start(Duration::from_secs(3600), 10);
    scheduler.schedule(id("a"), Instant::now() + Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(3599)).await;
    settle().await;
    assert!(recorder.calls.lock().unwrap().is_empty());
    stop.cancel();
}

/// Refreshes of namespace `slow` never finish; others finish at once.
struct Tenants {
    done: Mutex<Vec<String>>,
}

impl Refresher<Item> for Tenants {
    async fn refresh(&self, volume: Item) -> Option<Instant> {
        if volume.as_str().starts_with("slow") {
            std::future::pending::<()>().await;
        }
        self.done.lock().unwrap().push(volume.as_str().to_owned());
        None
    }

    async fn namespace(&self, volume: &Item) -> Option<String> {
        volume.as_str().split('-').next().map(str::to_owned)
    }
}

fn start_tenants(per_namespace: usize) -> (RefreshScheduler<Item>, Arc<Tenants>) {
    let (scheduler, task) = RefreshScheduler::new(Slots {
        total: 4,
        per_namespace,
    });
    let tenants = Arc::new(Tenants {
        done: Mutex::new(Vec::new()),
    });
    tokio::spawn(task.run(
        Arc::clone(&tenants),
        CancellationToken::new(),
        TaskTracker::new(),
    ));
    (scheduler, tenants)
}

/// One namespace whose refreshes hang takes at most its share of the
/// slots: another namespace's refresh still runs.
#[tokio::test(start_paused = true)]
async fn a_hanging_namespace_leaves_slots_for_others() {
    let (scheduler, tenants) = start_tenants(2);
    let t0 = Instant::now();
    for i in 0..6 {
        scheduler.schedule(id(&format!("slow-{i}")), t0 + Duration::from_secs(1));
    }
    scheduler.schedule(id("fast-a"), t0 + Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(*tenants.done.lock().unwrap(), vec!["fast-a".to_owned()]);
}

/// The same load without a per-namespace cap starves the other namespace:
/// what the cap is for.
#[tokio::test(start_paused = true)]
async fn without_a_cap_a_hanging_namespace_takes_every_slot() {
    let (scheduler, tenants) = start_tenants(64);
    let t0 = Instant::now();
    for i in 0..6 {
        scheduler.schedule(id(&format!("slow-{i}")), t0 + Duration::from_secs(1));
    }
    scheduler.schedule(id("fast-a"), t0 + Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    assert!(tenants.done.lock().unwrap().is_empty());
}

fn at(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The queue's lifecycle rules, without a task: a running item is never
/// handed out twice, deadlines asked for while it runs are kept, and a
/// cancelled item's answer is dropped unless it is scheduled again.
#[tokio::test(start_paused = true)]
async fn the_queue_owns_running_pending_and_cancelled() {
    let mut queue: Queue<Item> = Queue::default();
    let (t10, t20, t30) = (at(10), at(20), at(30));
    queue.schedule(id("a"), t20);
    queue.schedule(id("a"), t10);
    assert_eq!(queue.next(), Some(t10), "a new deadline replaces the old");
    assert_eq!(queue.pop_due(t10), vec![id("a")]);
    assert_eq!(queue.next(), None);

    // Running: a schedule is pending, and the sooner of it and the answer wins.
    queue.schedule(id("a"), t30);
    assert!(queue.pop_due(t30).is_empty(), "never handed out twice");
    queue.done(id("a"), Some(t20));
    assert_eq!(queue.next(), Some(t20));

    // Cancelled while running: the answer is dropped.
    assert_eq!(queue.pop_due(t20), vec![id("a")]);
    queue.cancel(&id("a"));
    queue.done(id("a"), Some(t30));
    assert_eq!(queue.next(), None);

    // Cancelled, then scheduled again while running: the answer counts.
    queue.schedule(id("b"), t10);
    assert_eq!(queue.pop_due(t10), vec![id("b")]);
    queue.cancel(&id("b"));
    queue.schedule(id("b"), t30);
    queue.done(id("b"), None);
    assert_eq!(queue.next(), Some(t30));

    // Done with nothing asked: forgotten.
    assert_eq!(queue.pop_due(t30), vec![id("b")]);
    queue.done(id("b"), None);
    assert_eq!(queue.next(), None);
    assert!(queue.running.is_empty() && queue.pending.is_empty() && queue.cancelled.is_empty());
}
