//! Scenarios `clients` and `idle` (issue 23): memory and CPU with many forward clients.
//!
//! * `clients`: for each count of `--clients` (8,64,256) busy connections (acks, `--window`
//!   unacked messages each) and each of 2 and 8 flush workers, one fresh relay loaded with
//!   `--records`; printed per case: records/s, the relay's CPU per million records and peak RSS,
//!   next to the same run's yardsticks for that many connections (the generator's ceiling and
//!   its CPU per million records).
//! * `idle`: `--idle` (1,000) connections opened and left idle: the relay's RSS before and after
//!   (memory per idle connection), then the busy load of `--connections` on top of them, with
//!   the peak RSS.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    cpu_seconds, generator_ceiling, peak_rss_mib, rss_breakdown, run_load, wait_records, Bench,
    Fake, Knobs, Load, Relay,
};

/// Current resident set size (`VmRSS`) of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one loaded relay did.
pub struct Run {
    pub rate: f64,
    pub cpu_per_million: f64,
    pub peak_rss: f64,
    pub now: String,
}

/// Loads a started relay with `k.records` over `k.connections` and measures it.
pub fn load_relay(
    rt: &tokio::runtime::Runtime,
    k: &Knobs,
    load: &Arc<Load>,
    fake: &Fake,
    relay: &Relay,
) -> Run {
    let pid = relay.child.id();
    let cpu0 = cpu_seconds(pid);
    fake.records.store(0, Ordering::Relaxed);
    let start = Instant::now();
    rt.block_on(run_load(relay.forward_port, k, load, k.records));
    let end = wait_records(fake, k.records, Duration::from_secs(900));
    let secs = end.duration_since(start).as_secs_f64();
    Run {
        rate: k.records as f64 / secs,
        cpu_per_million: (cpu_seconds(pid) - cpu0) / (k.records as f64 / 1e6),
        peak_rss: peak_rss_mib(pid),
        now: rss_breakdown(pid),
    }
}

/// The `clients` scenario.
pub fn clients(bench: &Bench<'_>, k: &Knobs) {
    let Bench {
        rt,
        load,
        fake,
        fake_port,
        dir: tmp,
        ca,
    } = *bench;
    println!(
        "clients: {} records per case, window {}, busy connections {:?}",
        k.records, k.window, k.clients
    );
    println!(
        "  {:>7} {:>7} {:>11} {:>9} {:>11} {:>11} {:>9} {:>10}  now",
        "clients",
        "workers",
        "records/s",
        "of gen",
        "CPU-s/M",
        "gen CPU-s/M",
        "relay/gen",
        "peak RSS"
    );
    for &clients in &k.clients {
        let mut kc = k.clone();
        kc.connections = clients;
        let gen_cpu0 = cpu_seconds(std::process::id());
        let gen = rt.block_on(generator_ceiling(&kc, load));
        let gen_cpu = (cpu_seconds(std::process::id()) - gen_cpu0) / (k.records as f64 / 1e6);
        for workers in [2, 8] {
            kc.workers = workers;
            let relay = Relay::start(tmp, fake_port, ca, &kc, "", "");
            let run = load_relay(rt, &kc, load, fake, &relay);
            println!(
                "  {clients:>7} {workers:>7} {:>11.0} {:>8.2}× {:>11.2} {gen_cpu:>11.2} {:>8.1}× {:>6.1} MiB  {}",
                run.rate,
                run.rate / gen,
                run.cpu_per_million,
                run.cpu_per_million / gen_cpu,
                run.peak_rss,
                run.now
            );
            relay.stop();
        }
    }
}

/// The `idle` scenario.
pub fn idle(bench: &Bench<'_>, k: &Knobs) {
    let Bench {
        rt,
        load,
        fake,
        fake_port,
        dir: tmp,
        ca,
    } = *bench;
    let relay = Relay::start(tmp, fake_port, ca, k, "", "");
    let pid = relay.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_mib(pid);
    let idle: Vec<std::net::TcpStream> = (0..k.idle)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", relay.forward_port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_mib(pid);
    println!(
        "idle: {} connections: relay RSS {before:.1} MiB before, {after:.1} MiB after: {:.1} KiB per idle connection (peak so far {:.1} MiB)",
        idle.len(),
        (after - before) * 1024.0 / idle.len().max(1) as f64,
        peak_rss_mib(pid)
    );
    let run = load_relay(rt, k, load, fake, &relay);
    println!(
        "  then {} busy connections beside them ({} workers): {:.0} records/s, {:.2} CPU-s per million records, peak RSS {:.1} MiB (now: {})",
        k.connections, k.workers, run.rate, run.cpu_per_million, run.peak_rss, run.now
    );
    drop(idle);
    relay.stop();
}
