//! `sandbox`: run the Engati-compatible server alone.

use std::process::ExitCode;

use crate::cli::SandboxArgs;
use crate::error::Error;
use crate::sandbox::{
    self as sbx, DataConfig, FaultConfig, LiveConfig, PageOrder, SandboxConfig, ShiftConfig,
    UsersShape,
};
use crate::time::{DAY_MS, parse_user_instant, rfc3339_ms};

/// The sandbox's settings from its flags (rates checked to be in 0..=1), and the first day of
/// its data (ms since epoch UTC, a UTC midnight).
fn config(a: SandboxArgs) -> Result<(SandboxConfig, i64), Error> {
    let shape: UsersShape = a
        .users_shape
        .parse()
        .map_err(|e| Error::Usage(format!("--users-shape: {e}")))?;
    let start_ms = parse_user_instant(&a.start, 0)
        .map_err(|e| Error::Usage(format!("--start: {e}")))?
        .div_euclid(DAY_MS)
        * DAY_MS;
    for (name, v) in [
        ("--fail-rate", a.fail_rate),
        ("--throttle-rate", a.throttle_rate),
        ("--truncate-rate", a.truncate_rate),
        ("--stall-rate", a.stall_rate),
        ("--malformed-rate", a.malformed_rate),
        ("--send-refuse-rate", a.send_refuse_rate),
        ("--send-throttle-rate", a.send_throttle_rate),
        ("--send-fail-after-rate", a.send_fail_after_rate),
        ("--send-stall-after-rate", a.send_stall_after_rate),
        ("--shift-rate", a.shift_rate),
        ("--dense-rate", a.dense_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::Usage(format!("{name} {v} must be between 0 and 1")));
        }
    }
    let order: PageOrder = a
        .page_order
        .parse()
        .map_err(|e| Error::Usage(format!("--page-order: {e}")))?;
    let cfg = SandboxConfig {
        port: a.port,
        data: DataConfig {
            seed: a.seed,
            users: a.users,
            start_ms,
            days: a.days,
            sessions_per_user: a.sessions_per_user,
            dense_user_rate: a.dense_rate,
            dense_sessions_per_user: a.dense_sessions,
            malformed_rate: a.malformed_rate,
            ..DataConfig::default()
        },
        users_shape: shape,
        users_id_key: a.users_id_key,
        conversations_key: a.conversations_key,
        start_exclusive: a.start_exclusive,
        end_inclusive: a.end_inclusive,
        deny_access: a.deny_access,
        faults: FaultConfig {
            latency_ms: a.latency_ms,
            fail_rate: a.fail_rate,
            throttle_rate: a.throttle_rate,
            retry_after_secs: a.retry_after_secs,
            truncate_rate: a.truncate_rate,
            stall_rate: a.stall_rate,
            stall_ms: a.stall_ms,
            seed: a.seed,
        },
        write: crate::sandbox::write::WriteConfig {
            refuse_500_rate: a.send_refuse_rate,
            refuse_429_rate: a.send_throttle_rate,
            retry_after_secs: a.retry_after_secs,
            fail_after_rate: a.send_fail_after_rate,
            stall_after_rate: a.send_stall_after_rate,
            stall_ms: a.stall_ms,
            seed: a.seed,
            ..Default::default()
        },
        live: (a.live_interval_ms > 0).then_some(LiveConfig {
            interval_ms: a.live_interval_ms,
            per_tick: a.live_per_tick,
            backdate_ms: a.live_backdate_ms,
        }),
        order,
        capacity: (a.capacity > 0).then_some(a.capacity),
        max_range_ms: match &a.max_range {
            Some(d) => Some(
                crate::time::parse_duration_ms(d)
                    .map_err(|e| Error::Usage(format!("--max-range {d}: {e}")))?,
            ),
            None => None,
        },
        shift: (a.shift_rate > 0.0).then_some(ShiftConfig {
            rate: a.shift_rate,
            max_per_window: a.shift_max_per_window,
            delete: a.shift_delete,
            seed: a.seed,
        }),
        ..SandboxConfig::default()
    };
    Ok((cfg, start_ms))
}

/// `engati-etl sandbox ...`: prints `ENGATI_*=value` lines on stdout (eval-able) and serves
/// until Ctrl-C.
///
/// # Errors
/// [`Error::Usage`] for a bad flag or a port that cannot be bound.
pub async fn sandbox(a: SandboxArgs) -> Result<ExitCode, Error> {
    let hubspot_port = a.hubspot_port;
    let (cfg, start_ms) = config(a)?;
    let days = cfg.data.days;
    let handle = sbx::start(cfg)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    let hubspot = match hubspot_port {
        Some(port) => match crate::sandbox::hubspot::start(crate::sandbox::hubspot::HubSpotConfig {
            port,
            ..Default::default()
        })
        .await
        {
            Ok(h) => Some(h),
            Err(e) => return Err(Error::Usage(format!("--hubspot-port {port}: {e}"))),
        },
        None => None,
    };
    if let Some(h) = &hubspot {
        println!("HUBSPOT_BASE_URL={}", h.base_url);
        println!("HUBSPOT_ACCESS_TOKEN={}", h.token);
    }
    let n = handle.data().message_count();
    println!("ENGATI_BASE_URL={}", handle.base_url);
    println!("ENGATI_CUSTOMER_ID={}", handle.ids.customer_id);
    println!("ENGATI_BOT_KEY={}", handle.ids.bot_key);
    println!("ENGATI_API_KEY={}", handle.ids.api_key);
    eprintln!(
        "engati-etl sandbox: {} users, {n} messages from {} to {} (seed {}); listening on {} until Ctrl-C.\n\
         The key above is the sandbox's own, not a secret. To use it from a shell:\n  \
         engati-etl sandbox > sandbox.env &   then   set -a; . ./sandbox.env; set +a\n  \
         engati-etl export --provider custom --attribute opt1=yes --since {} --until {} --format parquet --out out/sandbox",
        handle.data().users().len(),
        rfc3339_ms(start_ms),
        rfc3339_ms(start_ms + i64::from(days) * DAY_MS),
        handle.config().data.seed,
        handle.base_url,
        crate::time::date_string(start_ms),
        crate::time::date_string(start_ms + i64::from(days) * DAY_MS),
    );
    let _ = tokio::signal::ctrl_c().await;
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}
