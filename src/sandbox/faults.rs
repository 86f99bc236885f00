//! Fault injection for the sandbox: random faults at configured rates, and scripted faults that
//! hit the next matching requests in order ("500 twice, then 429 with Retry-After").

use std::collections::VecDeque;
use std::sync::Mutex;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random fault rates (0.0..=1.0 each) and their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Delay added to every response, ms.
    pub latency_ms: u64,
    /// Share of requests answered 500 with an HTML body.
    pub fail_rate: f64,
    /// Share answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    /// `Retry-After` value on 429s, seconds.
    pub retry_after_secs: u64,
    /// Share answered 200 with the JSON body cut in half.
    pub truncate_rate: f64,
    /// Share that stall for `stall_ms` before answering (longer than a client timeout).
    pub stall_rate: f64,
    /// Length of a stall, ms.
    pub stall_ms: u64,
    /// Seed of the fault dice.
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            truncate_rate: 0.0,
            stall_rate: 0.0,
            stall_ms: 30_000,
            seed: 7,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (500, 502, 503, 504) and an HTML body.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    Throttle {
        /// Seconds.
        retry_after_secs: u64,
    },
    /// 200 with half of the JSON body.
    Truncate,
    /// Wait this long (ms) before answering normally.
    Stall(u64),
}

impl Fault {
    /// Short label for the request log.
    pub fn label(&self) -> &'static str {
        match self {
            Fault::Status(_) => "status",
            Fault::Throttle { .. } => "throttle",
            Fault::Truncate => "truncate",
            Fault::Stall(_) => "stall",
        }
    }
}

/// Which requests a scripted fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Users API requests.
    Users,
    /// Conversations API requests.
    Conversations,
    /// Any request.
    Any,
}

/// The fault dice and the script.
pub struct Faults {
    config: FaultConfig,
    rng: Mutex<ChaCha8Rng>,
    script: Mutex<VecDeque<(Target, Fault)>>,
}

impl Faults {
    /// Faults from a config; the script starts empty.
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed)),
            config,
            script: Mutex::new(VecDeque::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Queues faults for the next requests matching `target`, in order.
    pub fn script(&self, target: Target, faults: impl IntoIterator<Item = Fault>) {
        let mut s = self.script.lock().expect("fault lock");
        s.extend(faults.into_iter().map(|f| (target, f)));
    }

    /// The fault for a request of kind `is_users` (scripted first, then random), if any.
    pub fn next(&self, is_users: bool) -> Option<Fault> {
        {
            let mut s = self.script.lock().expect("fault lock");
            let hit = s.iter().position(|(t, _)| match t {
                Target::Any => true,
                Target::Users => is_users,
                Target::Conversations => !is_users,
            });
            if let Some(i) = hit {
                return s.remove(i).map(|(_, f)| f);
            }
        }
        let c = &self.config;
        if c.fail_rate + c.throttle_rate + c.truncate_rate + c.stall_rate <= 0.0 {
            return None;
        }
        let roll: f64 = self.rng.lock().expect("fault lock").random();
        let mut edge = c.fail_rate;
        if roll < edge {
            return Some(Fault::Status(500));
        }
        edge += c.throttle_rate;
        if roll < edge {
            return Some(Fault::Throttle {
                retry_after_secs: c.retry_after_secs,
            });
        }
        edge += c.truncate_rate;
        if roll < edge {
            return Some(Fault::Truncate);
        }
        edge += c.stall_rate;
        if roll < edge {
            return Some(Fault::Stall(c.stall_ms));
        }
        None
    }
}
