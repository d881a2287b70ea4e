//! Keeps the guest's wall clock on the host's after the VM was paused (host sleep,
//! `stop`/`cont` on QMP). While the VM is paused its clocks stop, so it wakes up behind;
//! there is no host daemon to notice, so the guest checks itself against the RTC, which
//! QEMU keeps on the host's clock (`-rtc base=utc,clock=host`) whether or not the vCPUs
//! run. Virtualization.framework has no RTC: there, only the host's SetTime at `start`
//! sets the clock, and this task logs that once and ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One wake-up per period keeps an idle guest's CPU use at nothing measurable; a paused
/// guest is corrected within a period after it resumes.
const PERIOD: Duration = Duration::from_secs(10);
/// The RTC counts whole seconds, so smaller differences are its noise, not drift: the
/// clock is never stepped (least of all backwards) for them.
const THRESHOLD: f64 = 2.0;
/// How often the RTC is read while waiting for its next second.
const EDGE_POLL: Duration = Duration::from_millis(5);

const RTC: &str = "/sys/class/rtc/rtc0/since_epoch";

/// Starts the checks on the current runtime.
pub fn start() {
    tokio::spawn(run(PathBuf::from(RTC)));
}

async fn run(rtc: PathBuf) {
    if read_rtc(&rtc).is_none() {
        crate::console(&format!(
            "capsa-agent: no RTC ({}): the clock is set by the host at start only",
            rtc.display()
        ));
        return;
    }
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = check(&rtc).await {
            crate::console(&format!("capsa-agent: clock check: {e}"));
        }
    }
}

/// One check: a coarse comparison first (one read), and only when that shows drift, a
/// precise offset taken at the RTC's next second, then the step.
async fn check(rtc: &Path) -> Result<(), String> {
    let Some(seconds) = read_rtc(rtc) else {
        return Err(format!("cannot read {}", rtc.display()));
    };
    if coarse_drift(now(), seconds).is_none() {
        return Ok(());
    }
    let Some(offset) = offset_at_edge(rtc).await else {
        return Err(format!("{} did not advance within 2 s", rtc.display()));
    };
    if offset.abs() <= THRESHOLD {
        return Ok(());
    }
    let target = now() - offset;
    let nanos = (target * 1e9) as u64;
    crate::sys::set_realtime(nanos).map_err(|e| format!("stepping the clock: {e}"))?;
    crate::console(&format!(
        "capsa-agent: clock was {:.1} s {} the RTC: stepped",
        offset.abs(),
        if offset < 0.0 { "behind" } else { "ahead of" }
    ));
    Ok(())
}

/// How far the guest clock `now` is off the RTC's reading `rtc` (whole seconds, so the
/// true time is in `[rtc, rtc + 1)`), when that is beyond the threshold either way.
fn coarse_drift(now: f64, rtc: u64) -> Option<f64> {
    let rtc = rtc as f64;
    if now < rtc - THRESHOLD {
        Some(now - rtc)
    } else if now > rtc + 1.0 + THRESHOLD {
        Some(now - (rtc + 1.0))
    } else {
        None
    }
}

/// Guest clock minus host clock, to a few milliseconds: the RTC's second ticks over at
/// a whole second of host time, so the guest's clock at that moment gives the offset.
async fn offset_at_edge(rtc: &Path) -> Option<f64> {
    let first = read_rtc(rtc)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(EDGE_POLL).await;
        let seconds = read_rtc(rtc)?;
        if seconds != first {
            return Some(now() - seconds as f64);
        }
    }
    None
}

fn read_rtc(rtc: &Path) -> Option<u64> {
    std::fs::read_to_string(rtc).ok()?.trim().parse().ok()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_noise_is_not_drift() {
        let rtc = 1_000_000u64;
        let t = rtc as f64;
        // In sync: the true time is within the RTC's second; a second or two of slack
        // around it is noise, never a reason to step back.
        for now in [t, t + 0.5, t + 0.999, t - 1.9, t + 2.9] {
            assert_eq!(coarse_drift(now, rtc), None, "{now}");
        }
        let behind = coarse_drift(t - 15.0, rtc).unwrap();
        assert!((behind + 15.0).abs() < 1e-6, "{behind}");
        let ahead = coarse_drift(t + 5.0, rtc).unwrap();
        assert!((ahead - 4.0).abs() < 1e-6, "{ahead}");
    }

    #[tokio::test]
    async fn missing_or_garbled_rtc_reads_as_none() {
        let dir = std::env::temp_dir().join(format!("capsa-timesync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        assert_eq!(read_rtc(&missing), None);
        let garbled = dir.join("garbled");
        std::fs::write(&garbled, "soon\n").unwrap();
        assert_eq!(read_rtc(&garbled), None);
        let good = dir.join("good");
        std::fs::write(&good, "1700000000\n").unwrap();
        assert_eq!(read_rtc(&good), Some(1_700_000_000));
        // A frozen RTC never ticks over: no offset rather than a wrong one.
        assert_eq!(offset_at_edge(&good).await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
