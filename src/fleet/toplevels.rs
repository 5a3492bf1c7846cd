//! The toplevel pass: evaluating the selected hosts' toplevels (and profile paths), from the
//! evaluation cache or with several `nix eval` processes at once, one host's error failing only
//! that host.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::eval::{self, FlakeRef};
use super::eval_cache::{Cache, Key};

/// The memory one evaluator process is assumed to need (a NixOS configuration takes hundreds
/// of MiB); `--eval-memory` divided by this bounds the number of evaluators.
pub const MIB_PER_EVALUATOR: u64 = 1024;

/// The most hosts one evaluator process is given at a time: small enough that results come
/// back steadily and a failed batch costs little, large enough to share the flake's startup.
const MAX_BATCH: usize = 16;

/// How the toplevel pass runs.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Evaluator processes at once (`--eval-jobs`); `None` sizes it from cores and memory.
    pub jobs: Option<usize>,
    /// Memory, in MiB, that evaluation may use in all (`--eval-memory`); `None`: half of
    /// what the machine has available.
    pub memory_mib: Option<u64>,
    /// Use the evaluation cache (`--no-eval-cache` turns it off).
    pub cache: Option<Cache>,
}

impl EvalOptions {
    /// The number of evaluator processes for `hosts` hosts to evaluate.
    pub fn evaluators(&self, hosts: usize) -> usize {
        let jobs = self.jobs.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let memory = self
                .memory_mib
                .or_else(|| mem_available_mib().map(|m| m / 2))
                .unwrap_or(MIB_PER_EVALUATOR);
            cores.min((memory / MIB_PER_EVALUATOR) as usize).max(1)
        });
        jobs.clamp(1, hosts.max(1))
    }
}

/// `MemAvailable` from `/proc/meminfo`, in MiB.
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// What the toplevel pass produced.
#[derive(Debug, Default)]
pub struct Evaluated {
    /// Each evaluated host's inventory entry, as the metadata pass's entry would be with its
    /// toplevel and profile paths filled in.
    pub entries: BTreeMap<String, Value>,
    /// Hosts whose evaluation failed, with the message.
    pub failed: BTreeMap<String, String>,
    /// How many entries came from the cache.
    pub cached: usize,
    /// How many hosts Nix evaluated.
    pub evaluated: usize,
    /// Evaluator processes used.
    pub evaluators: usize,
    /// Wall time of the pass, in milliseconds.
    pub millis: u128,
}

/// Where the metadata pass's JSON keeps each host's entry, by the output it read.
pub fn host_entries<'a>(source: &str, value: &'a mut Value) -> Option<&'a mut Value> {
    match source {
        "nixdeploy" => value.get_mut("hosts"),
        "deploy" | "colmenaHive" => value.get_mut("nodes"),
        "nixosConfigurations" => Some(value),
        _ => None,
    }
}

/// What the toplevel pass hands over as it goes: the hosts of one finished batch (or of the
/// cache) with their entries, and the hosts that failed with their messages.
pub type OnBatch<'a> = &'a (dyn Fn(&BTreeMap<String, Value>, &BTreeMap<String, String>) + Sync);

/// Evaluates the toplevels of `hosts`, read from `source` of the flake at `reference`. Each
/// batch's results go to `on_batch` as soon as it finishes (cached hosts first, at once), so
/// a caller can start work on them while the rest are evaluated. Once `stop` is set, no new
/// batch starts; the hosts never evaluated are in neither map of the result.
pub fn evaluate(
    request: &Request<'_>,
    hosts: &[String],
    options: &EvalOptions,
    on_batch: OnBatch<'_>,
    stop: &AtomicBool,
) -> Evaluated {
    let start = Instant::now();
    let mut out = Evaluated::default();
    let mut missing = Vec::new();
    let mut cached = BTreeMap::new();
    for host in hosts {
        let hit = options
            .cache
            .as_ref()
            .zip(request.key(host))
            .and_then(|(cache, key)| cache.get(&key))
            .filter(derivations_present);
        match hit {
            Some(entry) => {
                cached.insert(host.clone(), entry);
            }
            None => missing.push(host.clone()),
        }
    }
    out.cached = cached.len();
    if !cached.is_empty() {
        on_batch(&cached, &BTreeMap::new());
    }
    out.entries = cached;
    if !missing.is_empty() {
        let jobs = options.evaluators(missing.len());
        out.evaluators = jobs;
        out.evaluated = missing.len();
        let work = Work {
            request,
            cache: options.cache.as_ref(),
            queue: Mutex::new(batches(&missing, jobs)),
            results: Mutex::new((BTreeMap::new(), BTreeMap::new())),
            on_batch,
            stop,
        };
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| work.run());
            }
        });
        let (entries, failed) = work.results.into_inner().unwrap_or_default();
        out.entries.extend(entries);
        out.failed = failed;
    }
    if let Some(cache) = &options.cache {
        cache.trim();
    }
    out.millis = start.elapsed().as_millis();
    out
}

/// What one toplevel pass evaluates: which flake, read how, and how its entries are cached.
pub struct Request<'a> {
    /// The flake as the user named it (for messages).
    pub flake: &'a str,
    /// The flake as Nix is given it.
    pub reference: &'a FlakeRef,
    /// The output the metadata pass read the hosts from (`nixdeploy`, `deploy`, ...).
    pub source: &'a str,
    /// The flake's `narHash`, when Nix reported one (without it nothing is cached).
    pub nar_hash: Option<&'a str>,
}

impl Request<'_> {
    /// The evaluation cache's key for one host's entry.
    fn key(&self, host: &str) -> Option<Key> {
        self.nar_hash.map(|nar_hash| Key {
            flake: self.reference.nix_ref.clone(),
            nar_hash: nar_hash.to_string(),
            host: host.to_string(),
            expression: eval::expression_version(),
        })
    }
}

/// The batches of `hosts` for `jobs` evaluators: an even share of the hosts each (at most
/// [`MAX_BATCH`]), so each evaluator's start-up (the flake, nixpkgs, a heap grown for one
/// configuration) serves many hosts. A batch's hosts are handed over one by one as Nix
/// evaluates them, so its first host reaches its build and copy after one evaluation.
fn batches(hosts: &[String], jobs: usize) -> VecDeque<Vec<String>> {
    let size = hosts.len().div_ceil(jobs.max(1)).clamp(1, MAX_BATCH);
    hosts.chunks(size).map(<[_]>::to_vec).collect()
}

/// Whether every `.drv` a cached entry names is still in the store: a garbage collection may
/// have removed it since, and then the entry cannot be built from and is evaluated again.
fn derivations_present(entry: &Value) -> bool {
    match entry {
        Value::Object(map)
            if map.get("__nixdeploy").and_then(Value::as_str) == Some("derivation") =>
        {
            map.get("drv")
                .and_then(Value::as_str)
                .is_some_and(|drv| std::path::Path::new(drv).exists())
        }
        Value::Object(map) => map.values().all(derivations_present),
        Value::Array(items) => items.iter().all(derivations_present),
        _ => true,
    }
}

type Results = (BTreeMap<String, Value>, BTreeMap<String, String>);

/// The batches still to evaluate, shared by the evaluator threads.
struct Work<'a> {
    request: &'a Request<'a>,
    cache: Option<&'a Cache>,
    queue: Mutex<VecDeque<Vec<String>>>,
    results: Mutex<Results>,
    on_batch: OnBatch<'a>,
    stop: &'a AtomicBool,
}

impl Work<'_> {
    /// Takes batches until none are left (or the pass is stopped). Each host is handed over
    /// as soon as Nix announces its entry. When the batch's evaluation fails, the hosts it had
    /// not announced yet are evaluated again one by one, so a broken host costs the others one
    /// more evaluation, not their deploy.
    fn run(&self) {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(batch) = self.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                return;
            };
            let mut announced = std::collections::BTreeSet::new();
            let result =
                eval::evaluate_hosts(self.request.reference, &batch, &mut |host, entry| {
                    if batch.contains(&host) && announced.insert(host.clone()) {
                        self.take(&batch, &host, entry);
                    }
                });
            let rest: Vec<&String> = batch.iter().filter(|h| !announced.contains(*h)).collect();
            match result {
                // Every entry is also in the final value: a host whose announcement was not
                // read is taken from there.
                Ok(mut value) => {
                    let mut body = value["value"].take();
                    let entries = host_entries(self.request.source, &mut body);
                    for host in rest {
                        match entries.as_ref().and_then(|e| e.get(host.as_str())).cloned() {
                            Some(entry) => self.take(&batch, host, entry),
                            None => self.deliver(
                                BTreeMap::new(),
                                self.fail(
                                    host,
                                    &format!(
                                        "error: host {host} is missing from the toplevel pass of flake '{}'",
                                        self.request.flake
                                    ),
                                ),
                            ),
                        }
                    }
                }
                Err(_) if batch.len() > 1 => {
                    if let Ok(mut q) = self.queue.lock() {
                        q.extend(rest.into_iter().map(|h| vec![h.clone()]));
                    }
                }
                Err(stderr) => {
                    if let Some(host) = rest.first() {
                        self.deliver(BTreeMap::new(), self.fail(host, &stderr));
                    }
                }
            }
        }
    }

    /// Files one host's entry; a host the expression caught failing is evaluated again alone,
    /// for Nix's message.
    fn take(&self, batch: &[String], host: &str, entry: Value) {
        if entry["__nixdeploy"] == "failed" {
            if batch.len() > 1 {
                if let Ok(mut q) = self.queue.lock() {
                    q.push_back(vec![host.to_string()]);
                }
            } else {
                self.deliver(
                    BTreeMap::new(),
                    self.fail(host, "error: the toplevel threw an error"),
                );
            }
            return;
        }
        if let Some((cache, key)) = self.cache.zip(self.request.key(host)) {
            cache.put(&key, &entry);
        }
        self.deliver(BTreeMap::from([(host.to_string(), entry)]), BTreeMap::new());
    }

    /// One failed host, with the message its `evaluate` step shows.
    fn fail(&self, host: &str, stderr: &str) -> BTreeMap<String, String> {
        let message = eval::host_error(self.request.reference, stderr);
        BTreeMap::from([(host.to_string(), message)])
    }

    /// Hands a batch's results to the caller and keeps them for the pass's summary.
    fn deliver(&self, good: BTreeMap<String, Value>, bad: BTreeMap<String, String>) {
        if good.is_empty() && bad.is_empty() {
            return;
        }
        (self.on_batch)(&good, &bad);
        if let Ok(mut r) = self.results.lock() {
            r.0.extend(good);
            r.1.extend(bad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluators_never_outnumber_hosts_and_follow_memory() {
        let options = EvalOptions {
            jobs: None,
            memory_mib: Some(2 * MIB_PER_EVALUATOR),
            cache: None,
        };
        assert!(options.evaluators(100) <= 2);
        assert_eq!(options.evaluators(1), 1);
        let tiny = EvalOptions {
            memory_mib: Some(10),
            ..options.clone()
        };
        assert_eq!(tiny.evaluators(100), 1, "at least one evaluator");
        let forced = EvalOptions {
            jobs: Some(6),
            ..options
        };
        assert_eq!(forced.evaluators(100), 6);
        assert_eq!(forced.evaluators(3), 3);
    }

    #[test]
    fn a_cached_entry_whose_derivation_was_collected_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let drv = dir.path().join("x.drv");
        let entry = |drv: &std::path::Path| serde_json::json!({ "tags": [], "toplevel": { "__nixdeploy": "derivation", "drv": drv, "out": "/nix/store/x" } });
        assert!(!derivations_present(&entry(&drv)));
        std::fs::write(&drv, "").unwrap();
        assert!(derivations_present(&entry(&drv)));
    }

    #[test]
    fn batches_are_an_even_share_of_the_hosts_and_at_most_sixteen() {
        let hosts: Vec<String> = (1..=40).map(|i| format!("h{i}")).collect();
        let sizes: Vec<usize> = batches(&hosts, 2).iter().map(Vec::len).collect();
        assert_eq!(sizes, [16, 16, 8]);
        let sizes32: Vec<usize> = batches(&hosts[..32], 2).iter().map(Vec::len).collect();
        assert_eq!(sizes32, [16, 16]);
        assert_eq!(sizes.iter().sum::<usize>(), 40, "every host once");
        let flat: Vec<String> = batches(&hosts, 2).into_iter().flatten().collect();
        assert_eq!(flat, hosts, "in order");
        assert_eq!(batches(&hosts[..3], 8).len(), 3);
        assert!(batches(&[], 2).is_empty());
    }

    #[test]
    fn host_entries_are_found_for_every_source() {
        let mut v = serde_json::json!({ "hosts": { "a": 1 } });
        assert_eq!(host_entries("nixdeploy", &mut v).unwrap()["a"], 1);
        let mut v = serde_json::json!({ "nodes": { "a": 1 } });
        assert_eq!(host_entries("deploy", &mut v).unwrap()["a"], 1);
        assert_eq!(host_entries("colmenaHive", &mut v).unwrap()["a"], 1);
        let mut v = serde_json::json!({ "a": 1 });
        assert_eq!(host_entries("nixosConfigurations", &mut v).unwrap()["a"], 1);
    }
}
