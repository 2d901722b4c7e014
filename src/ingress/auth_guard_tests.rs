use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn limits(max_failures: u32) -> FailureLimits {
    FailureLimits {
        max_failures,
        window: Duration::from_secs(600),
        lockout: Duration::from_secs(900),
        capacity: 100,
    }
}

fn guard(max_concurrent_checks: usize, per_ip: u32, per_user: u32) -> AuthGuard {
    AuthGuard::new(AuthGuardConfig {
        max_concurrent_checks,
        failure_delay: Duration::ZERO,
        per_ip: limits(per_ip),
        per_user: limits(per_user),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_never_exceed_the_bound() {
    const TASKS: usize = 12;
    let guard = Arc::new(guard(2, 0, 0));
    let running = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..TASKS as u8 {
        let (guard, running, most) = (guard.clone(), running.clone(), most.clone());
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let ip = IpAddr::from([192, 0, 2, i]);
            guard
                .verify(ip, &format!("user{i}"), move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Each check holds its slot until another runs beside it (or no
                    // other is left): a bound of 2 is then reached, and a third check
                    // let in would be seen.
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while running.load(Ordering::SeqCst) < 2
                        && done.load(Ordering::SeqCst) + running.load(Ordering::SeqCst) < TASKS
                    {
                        assert!(std::time::Instant::now() < deadline, "no second check ran");
                        std::thread::yield_now();
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    false
                })
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Verdict::Rejected { .. }));
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most, and at best, 2 at once"
    );
}

#[tokio::test]
async fn failures_from_one_ipv6_slash_64_add_up_and_lock_it_out() {
    let guard = guard(2, 3, 0);
    let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::10".parse().unwrap();
    assert_eq!(ClientNet::of(a), ClientNet::of(b));
    assert_ne!(ClientNet::of(a), ClientNet::of(other));
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(
        ClientNet::of(mapped),
        ClientNet::of("192.0.2.1".parse().unwrap())
    );
    for (i, ip) in [a, b, a].into_iter().enumerate() {
        let verdict = guard.verify(ip, &format!("u{i}"), || false).await;
        let expected = (i == 2).then_some(Scope::Ip);
        assert_eq!(
            verdict,
            Verdict::Rejected {
                lockouts: [expected, None]
            }
        );
    }
    assert_eq!(
        guard.verify(b, "u9", || true).await,
        Verdict::LockedOut(Scope::Ip)
    );
    assert_eq!(guard.verify(other, "u9", || true).await, Verdict::Accepted);
}

#[tokio::test]
async fn a_locked_user_is_refused_from_any_address_without_a_check() {
    let guard = guard(2, 0, 2);
    for i in 0..2u8 {
        let _ = guard
            .verify(IpAddr::from([192, 0, 2, i]), "alice", || false)
            .await;
    }
    let checked = Arc::new(AtomicUsize::new(0));
    let counter = checked.clone();
    let verdict = guard
        .verify(IpAddr::from([198, 51, 100, 1]), "alice", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            true
        })
        .await;
    assert_eq!(verdict, Verdict::LockedOut(Scope::User));
    assert_eq!(verdict.outcome(), AuthOutcome::Unavailable);
    assert_eq!(
        checked.load(Ordering::SeqCst),
        0,
        "no hash for a locked user"
    );
    let bob = guard
        .verify(IpAddr::from([198, 51, 100, 1]), "bob", || true)
        .await;
    assert_eq!(bob, Verdict::Accepted);
}

#[test]
fn the_delay_doubles_per_failure_up_to_eight_times() {
    let mut guard = guard(1, 0, 0);
    guard.config.failure_delay = Duration::from_millis(100);
    let delays: Vec<u64> = (0..7).map(|n| guard.delay(n).as_millis() as u64).collect();
    assert_eq!(delays, [0, 100, 200, 400, 800, 800, 800]);
}

#[tokio::test]
async fn rotating_ipv6_networks_and_user_names_stay_within_the_tables() {
    let guard = guard(2, 3, 3);
    for i in 0..3_000u64 {
        let ip = std::net::Ipv6Addr::from_bits((0x2001_0db8_u128 << 96) | (u128::from(i) << 64));
        let verdict = guard
            .verify(IpAddr::V6(ip), &format!("user-{i}"), || false)
            .await;
        assert!(matches!(verdict, Verdict::Rejected { .. }), "{verdict:?}");
        let (nets, users) = guard.tracked();
        assert!(
            nets <= 100 && users <= 100,
            "{nets} networks, {users} users"
        );
    }
}
