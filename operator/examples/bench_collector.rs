//! `make bench-collector`: the collector against the Okta test server and three product test
//! servers. Prints events/s end to end, CPU seconds per million events, peak memory, Okta
//! requests per event, and peak memory with a 100,000-event backlog on one down product.
//!
//! The collector runs as a child process (this same executable, `--child CONFIG`) on a
//! single-threaded runtime, so its CPU time and peak memory (`/proc/<pid>/stat` utime+stime,
//! `/proc/<pid>/status` VmHWM) are its own, on one core; the test servers run in this process.
//! Sizes: `BENCH_EVENTS` (default 300000), `BENCH_BACKLOG` (default 100000).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::Utc;
use unified_connectors::contract::*;

use uc_testkit::Received;
use uc_testkit::azure::{self, AzureServer};
use uc_testkit::hec::{self, HecServer};
use uc_testkit::okta::{self, GenerateOptions, OktaServer, Permission};
use uc_testkit::webhook::{self, WebhookServer};

const TOKEN: &str = "bench-token";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        // The collector under test: one thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(unified_connectors::collector::run(Path::new(&args[2])));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Servers {
    okta: OktaServer,
    azure: AzureServer,
    hec: HecServer,
    hook: WebhookServer,
    dir: PathBuf,
}

/// The temporary directory (secret files, state) goes with the test's servers.
impl Drop for Servers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Servers {
    async fn start() -> Servers {
        let okta = OktaServer::start(okta::Options::unlimited()).await;
        okta.add_token(TOKEN, Permission::ReadOnlyAdmin);
        let azure = AzureServer::start(azure::Options {
            keep_records: false,
            ..Default::default()
        })
        .await;
        let hec = HecServer::start(hec::Options {
            keep_records: false,
            ..Default::default()
        })
        .await;
        let hook = WebhookServer::start(webhook::Options {
            keep_records: false,
            ..Default::default()
        })
        .await;
        let dir = std::env::temp_dir().join(format!("uc-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Servers {
            okta,
            azure,
            hec,
            hook,
            dir,
        }
    }

    fn generate(&self, n: usize) -> Vec<String> {
        let org = self.okta.default_org().to_string();
        let mut uuids = Vec::with_capacity(n);
        // In chunks, persisted over the past hours.
        let chunk = 50_000;
        let mut done = 0;
        while done < n {
            let k = chunk.min(n - done);
            uuids.extend(self.okta.generate_events(
                &org,
                k,
                &GenerateOptions {
                    start: Some(
                        Utc::now() - chrono::Duration::minutes(120)
                            + chrono::Duration::seconds(done as i64 / 100),
                    ),
                    spacing_ms: 1,
                    ..Default::default()
                },
            ));
            done += k;
        }
        uuids
    }

    fn secret(&self, name: &str, value: &str) -> SecretSource {
        let p = self.dir.join(name);
        std::fs::write(&p, value).unwrap();
        SecretSource::File(p)
    }

    fn config(&self, products: &[&str]) -> PathBuf {
        let since = Utc::now() - chrono::Duration::hours(3);
        let a = self.azure.options().clone();
        let products = products
            .iter()
            .map(|p| ProductConfig {
                id: p.to_string(),
                since,
                filter: EventFilter::default(),
                sink: match *p {
                    "sentinel" => SinkConfig::Sentinel(SentinelSink {
                        endpoint: self.azure.url(),
                        dcr_immutable_id: a.dcr_immutable_id.clone(),
                        stream_name: a.stream_name.clone(),
                        table: None,
                        authority_host: Some(self.azure.url()),
                        tenant_id: self.secret("tenant", &a.tenant_id),
                        client_id: self.secret("client", &a.client_id),
                        client_secret: self.secret("secret", &a.client_secret),
                        allow_insecure_http: true,
                    }),
                    "hec" => SinkConfig::SplunkHec(SplunkHecSink {
                        url: self.hec.url(),
                        token: self.secret("hec", hec::Options::DEFAULT_TOKEN),
                        index: None,
                        sourcetype: "OktaIM2:log".into(),
                        allow_insecure_http: true,
                    }),
                    _ => SinkConfig::Webhook(WebhookSink {
                        url: self.hook.url(),
                        signing_secret: self.secret("whsec", self.hook.secret()),
                        headers: Default::default(),
                        allow_insecure_http: true,
                    }),
                },
            })
            .collect();
        let c = CollectorConfig {
            version: CONTRACT_VERSION,
            source: SourceConfig::Okta(OktaSourceConfig {
                domain: self.okta.default_org().to_string(),
                base_url: Some(self.okta.url()),
                allow_insecure_http: true,
                token: self.secret("okta", TOKEN),
                since,
                poll_interval: Duration::from_secs(1),
                rate_limit_share: 0.5,
                page_limit: 1000,
            }),
            products,
            state: StateConfig::File {
                path: self.dir.join("state.json"),
            },
            tuning: Tuning::default(),
            listen: "127.0.0.1:0".into(),
        };
        let path = self.dir.join("collector.yaml");
        std::fs::write(&path, serde_saphyr::to_string(&c).unwrap()).unwrap();
        path
    }

    fn received(&self, p: &str) -> &Received {
        match p {
            "sentinel" => self.azure.received(),
            "hec" => self.hec.received(),
            _ => self.hook.received(),
        }
    }
}

fn spawn_collector(config: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawning the collector")
}

/// (CPU seconds, VmHWM KiB) of a live process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(14) + ticks(15)) / 100.0; // USER_HZ is 100 on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn wait_all(s: &Servers, products: &[&str], n: usize, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if products.iter().all(|p| s.received(p).unique() >= n) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "not delivered within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench() -> anyhow::Result<()> {
    let n = env_usize("BENCH_EVENTS", 300_000);
    let backlog = env_usize("BENCH_BACKLOG", 100_000);
    let all = ["sentinel", "hec", "webhook"];
    println!(
        "collector benchmark: {n} events, Okta pages of 1000, default tuning, collector on one thread"
    );

    // 1. Throughput with three products.
    let s = Servers::start().await;
    let t = Instant::now();
    let expected = s.generate(n);
    println!(
        "  generated {n} events in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let page = unified_connectors::http::client(Duration::from_secs(30))
        .get(format!(
            "{}/api/v1/logs?limit=1000&since={}",
            s.okta.url(),
            (Utc::now() - chrono::Duration::hours(3))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .header("authorization", format!("SSWS {TOKEN}"))
        .send()
        .await?
        .bytes()
        .await?;
    let size = page.len() as f64 / 1000.0;
    println!("  average event size: {size:.0} bytes of JSON");
    // The size probe above is not the collector's: count from here.
    let base = s.okta.log_requests();
    let (servers_before, _) = usage(std::process::id());
    let child = spawn_collector(&s.config(&all));
    let pid = child.id();
    let elapsed = wait_all(&s, &all, n, Duration::from_secs(600)).await;
    let (cpu, hwm) = usage(pid);
    let servers_cpu = usage(std::process::id()).0 - servers_before;
    stop(child);
    let mut requests3 = s.okta.log_requests();
    requests3.total -= base.total;
    requests3.events_served -= base.events_served;
    let mut seen = std::collections::HashMap::new();
    for r in s
        .okta
        .requests()
        .iter()
        .skip(base.total as usize)
        .filter(|r| r.events > 0)
    {
        *seen.entry(r.query.clone()).or_insert(0) += 1;
    }
    let reread: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let dups: u64 = all.iter().map(|p| s.received(p).duplicates()).sum();
    let missing: usize = all
        .iter()
        .map(|p| s.received(p).missing(&expected).len())
        .sum();
    println!("three products (sentinel + splunkHec + webhook):");
    println!(
        "  end to end: {:.0} events/s ({n} events to each of 3 products in {:.2}s)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  CPU: {:.2} s per million events ({cpu:.2} s total, includes start-up)",
        cpu / n as f64 * 1e6
    );
    println!("  peak memory (VmHWM): {:.1} MiB", hwm as f64 / 1024.0);
    println!(
        "  meanwhile the four test servers used {servers_cpu:.2} CPU s, on the same 2-core machine"
    );
    println!(
        "  Okta requests: {} for {n} events = {:.5} per event ({} events served)",
        requests3.total,
        requests3.total as f64 / n as f64,
        requests3.events_served
    );
    println!(
        "  duplicates: {dups}, missing: {missing}; pages read more than once: {}",
        reread.len()
    );
    for (q, n) in reread.iter().take(3) {
        println!("    {n}x {q}");
    }
    drop(s);

    // 2. The same read with one product: the Okta request stream does not depend on the product count.
    let s = Servers::start().await;
    s.generate(n);
    let child = spawn_collector(&s.config(&["hec"]));
    let elapsed1 = wait_all(&s, &["hec"], n, Duration::from_secs(600)).await;
    stop(child);
    let requests1 = s.okta.log_requests();
    println!("one product (splunkHec), same events:");
    println!(
        "  end to end: {:.0} events/s",
        n as f64 / elapsed1.as_secs_f64()
    );
    println!(
        "  Okta requests: {} (three products: {}), events served {} (three products: {})",
        requests1.total, requests3.total, requests1.events_served, requests3.events_served
    );
    drop(s);

    // 3. A backlog of `backlog` events on one down product.
    let s = Servers::start().await;
    s.hook.set_down(true);
    let expected = s.generate(backlog);
    let child = spawn_collector(&s.config(&all));
    let pid = child.id();
    wait_all(&s, &["sentinel", "hec"], backlog, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, hwm_down) = usage(pid);
    let before = s.okta.log_requests().total;
    s.hook.set_down(false);
    let catch_up = wait_all(&s, &["webhook"], backlog, Duration::from_secs(600)).await;
    let (_, hwm_after) = usage(pid);
    stop(child);
    let reread = s.okta.log_requests().total - before;
    println!("{backlog}-event backlog on one down product (webhook), max 20000 in memory:");
    println!(
        "  peak memory (VmHWM) while down: {:.1} MiB; after its catch-up: {:.1} MiB",
        hwm_down as f64 / 1024.0,
        hwm_after as f64 / 1024.0
    );
    println!(
        "  catch-up after recovery: {:.2}s, {reread} Okta requests (re-read from its own position)",
        catch_up.as_secs_f64()
    );
    println!(
        "  webhook: {} unique, {} duplicates, {} missing",
        s.hook.received().unique(),
        s.hook.received().duplicates(),
        s.hook.received().missing(&expected).len()
    );
    Ok(())
}
