//! The controller's trajectory under synthetic round trips and statuses, and the semaphore's
//! accounting under cuts. No clocks: time is an argument.

use super::*;

/// Feeds one period of `n` responses (the limit's worth unless given) spread over `rtt`
/// seconds from `*t`, the limit having been reached; returns the limit after it.
fn period(a: &mut Aimd, t: &mut f64, rtt: f64, outcome: Outcome) -> usize {
    a.reached_limit();
    let n = a.limit();
    let epoch = a.epoch();
    let start = *t;
    for i in 0..n {
        let at = if i + 1 == n {
            start + rtt
        } else {
            start + rtt * (i + 1) as f64 / n as f64
        };
        a.on_response(at, rtt, outcome, epoch);
    }
    *t = start + rtt;
    a.limit()
}

/// The limit after each of `periods` flat periods of `rtt`.
fn flat(a: &mut Aimd, t: &mut f64, rtt: f64, periods: usize) -> Vec<usize> {
    (0..periods)
        .map(|_| period(a, t, rtt, Outcome::Ok))
        .collect()
}

#[test]
fn slow_start_doubles_each_flat_round_trip_up_to_the_max() {
    let mut a = Aimd::new(1, 48);
    let mut t = 0.0;
    // The first period only measures (no past RTT yet).
    assert_eq!(
        flat(&mut a, &mut t, 0.1, 9),
        [1, 2, 4, 8, 16, 32, 48, 48, 48]
    );
    assert_eq!(a.cuts, 0);
}

#[test]
fn back_pressure_cuts_at_once_once_per_period_and_ends_slow_start() {
    let mut a = Aimd::new(1, 100);
    let mut t = 0.0;
    flat(&mut a, &mut t, 0.1, 7);
    assert_eq!(a.limit(), 64);
    // A 429: cut to 57 at once; a second 429 of the same period changes nothing.
    t += 0.01;
    let e = a.epoch();
    assert_eq!(a.on_response(t, 0.001, Outcome::BackPressure, e), 57);
    assert_eq!(
        a.on_response(t + 0.001, 0.001, Outcome::BackPressure, e),
        57
    );
    // The responses sent under the old limit finish the period: no raise in it.
    assert_eq!(period(&mut a, &mut t, 0.1, Outcome::Ok), 57);
    // Then additive: one per flat round trip.
    assert_eq!(flat(&mut a, &mut t, 0.1, 4), [58, 59, 60, 61]);
    assert_eq!((a.cuts, a.pushback_cuts), (1, 1));
}

#[test]
fn a_503_or_a_timeout_is_back_pressure_too_and_a_limit_of_one_is_not_cut() {
    let mut a = Aimd::new(1, 100);
    let mut t = 0.0;
    // Pushed back at 1: nothing to cut, nothing counted.
    assert_eq!(
        a.on_response(0.0, 0.05, Outcome::BackPressure, a.epoch()),
        1
    );
    assert_eq!((a.cuts, a.pushback_cuts), (0, 0));
    period(&mut a, &mut t, 0.1, Outcome::Ok);
    // Slow start is over after that push-back: +1 per flat round trip.
    assert_eq!(flat(&mut a, &mut t, 0.1, 3), [2, 3, 4]);
    // Two pushed-back periods (a 503, then a timeout): 4 -> 3 -> 2.
    assert_eq!(period(&mut a, &mut t, 0.1, Outcome::BackPressure), 3);
    assert_eq!(period(&mut a, &mut t, 0.1, Outcome::BackPressure), 2);
    assert_eq!((a.cuts, a.pushback_cuts), (2, 2));
}

#[test]
fn a_rising_rtt_cuts_and_the_past_rtt_follows() {
    let mut a = Aimd::new(1, 100);
    let mut t = 0.0;
    flat(&mut a, &mut t, 0.1, 6);
    assert_eq!(a.limit(), 32);
    // The server queues: the round trip doubles. Cut (x0.9, slow start over).
    assert_eq!(period(&mut a, &mut t, 0.2, Outcome::Ok), 28);
    // The past RTT moves toward 0.2 s (weight 0.4): the next 0.2 s period is still above the
    // past mean plus 2.5 deviations? The deviation grew with the jump, so it is not: no cut,
    // and no raise either (not below the past mean).
    assert_eq!(period(&mut a, &mut t, 0.2, Outcome::Ok), 28);
    // Back at 0.1 s: flat again (below the past mean of ~0.16 s): +1 once the controller's
    // period (the past mean, longer than 0.1 s now) ends.
    assert_eq!(flat(&mut a, &mut t, 0.1, 2), [28, 29]);
    assert_eq!(
        (a.cuts, a.pushback_cuts),
        (1, 0),
        "cut on the RTT, not on push-back"
    );
}

#[test]
fn a_period_with_no_waiting_request_never_raises() {
    let mut a = Aimd::new(4, 100);
    let mut t = 0.0;
    for _ in 0..10 {
        for i in 1..=4 {
            a.on_response(t + 0.025 * f64::from(i), 0.1, Outcome::Ok, a.epoch());
        }
        t += 0.1;
    }
    assert_eq!(a.limit(), 4, "the work, not the limit, held requests back");
}

#[test]
fn the_limit_stays_between_one_and_the_max() {
    let mut a = Aimd::new(1, 5);
    let mut t = 0.0;
    assert_eq!(flat(&mut a, &mut t, 0.05, 6), [1, 2, 4, 5, 5, 5]);
    for _ in 0..40 {
        t += 0.06;
        a.on_response(t, 0.001, Outcome::BackPressure, a.epoch());
        period(&mut a, &mut t, 0.05, Outcome::Ok);
    }
    assert_eq!(a.limit(), 1);
    // Other failures (a 404, a 500) neither cut nor count as a sample.
    let before = a.limit();
    a.on_response(t + 1.0, 9.0, Outcome::Other, a.epoch());
    assert_eq!(a.limit(), before);
}

#[test]
fn a_cut_forgets_free_permits_and_the_rest_as_they_come_back() {
    let l = Limiter::adaptive_from(8, 8);
    let permits: Vec<Permit<'_>> = (0..8)
        .map(|_| futures_util::FutureExt::now_or_never(l.acquire()).expect("free"))
        .collect();
    assert_eq!(l.sem.available_permits(), 0);
    let mut permits = permits.into_iter();
    // A 429: 8 -> 7; no permit is free, so the one coming back is forgotten.
    permits.next().unwrap().done(Outcome::BackPressure);
    assert_eq!(l.limit(), 7);
    assert_eq!(l.sem.available_permits(), 0);
    for p in permits {
        p.done(Outcome::Other);
    }
    assert_eq!(l.sem.available_permits(), 7, "as many permits as the limit");
    let r = l.report().unwrap();
    assert_eq!((r.final_limit, r.max_limit, r.cuts), (7, 8, 1));
}

#[test]
fn a_fixed_limit_never_moves() {
    let l = Limiter::fixed(3);
    for outcome in [Outcome::BackPressure, Outcome::Ok, Outcome::Other] {
        let p = futures_util::FutureExt::now_or_never(l.acquire()).unwrap();
        p.done(outcome);
    }
    assert_eq!((l.limit(), l.sem.available_permits()), (3, 3));
    assert!(l.report().is_none());
}

#[test]
fn concurrency_reads_a_number_or_auto() {
    assert_eq!("16".parse::<Concurrency>(), Ok(Concurrency::Fixed(16)));
    assert_eq!("auto".parse::<Concurrency>(), Ok(Concurrency::Auto));
    assert!("sixteen".parse::<Concurrency>().is_err());
    #[derive(serde::Deserialize)]
    struct S {
        c: Concurrency,
    }
    let n: S = toml::from_str("c = 16").unwrap();
    let a: S = toml::from_str("c = \"auto\"").unwrap();
    assert_eq!((n.c, a.c), (Concurrency::Fixed(16), Concurrency::Auto));
    assert_eq!(
        serde_json::to_string(&Concurrency::Auto).unwrap(),
        "\"auto\""
    );
}

#[test]
fn answers_to_requests_sent_before_a_raise_do_not_judge_it() {
    let mut a = Aimd::new(1, 256);
    let mut t = 0.0;
    flat(&mut a, &mut t, 0.1, 5);
    assert_eq!(a.limit(), 16);
    let old = a.epoch();
    // One more flat period raises to 32 (a server of capacity 16 now queues).
    assert_eq!(period(&mut a, &mut t, 0.1, Outcome::Ok), 32);
    // Late answers to requests sent at 16 look flat: they are no samples, so no second
    // doubling however long they keep coming.
    for i in 1..=20 {
        a.reached_limit();
        a.on_response(t + 0.01 * f64::from(i), 0.1, Outcome::Ok, old);
    }
    assert_eq!(a.limit(), 32);
    t += 0.2;
    // Answers to requests sent at 32 show the queue: the round trip doubled. Cut.
    assert_eq!(period(&mut a, &mut t, 0.2, Outcome::Ok), 28);
}
