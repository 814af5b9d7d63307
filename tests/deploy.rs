//! Deployment artefacts, checked with the tools that consume them and against the service itself:
//!
//! - `docker-compose.yml` renders (`docker-compose config`) and configures the service only through
//!   settings it loads; three nodes (and an opt-in GPU one) share the database and Redis, each with
//!   its own id, address, outbox volume and host port; the demo tokens are the SHA-256 of the
//!   documented demo tokens;
//! - `deploy/prometheus`: `promtool check rules`, `promtool test rules` (every alert fires and stays
//!   quiet on synthetic series), `promtool check config`; every alert has a severity, a summary, a
//!   description and a runbook link to its section of docs/OPERATIONS.md;
//! - `deploy/k8s`: `kubernetes-validate --strict` (offline, schemas shipped in the package; the
//!   Prometheus Operator's kinds have no schema there and are checked here instead); the manifests
//!   as kustomization.yaml renders them hang together (selectors, ports, volumes and claims, the
//!   outbox on the pod's claim, the grace period around the preStop drain, the HPA's metrics made
//!   by prometheus-adapter's rules from series the service exports); the PrometheusRule carries
//!   exactly the groups of alerts.yml; the ConfigMap and the StatefulSet's variables load as
//!   settings;
//! - `deploy/grafana`: the dashboard is JSON and every query parses as PromQL;
//! - a real Prometheus scrapes the real service, finds the series, and evaluates every alert rule
//!   on them without error; every metric the rules and the dashboard use is one the service registers.
//!
//! Tools: `docker-compose` and `prometheus` (with `promtool`) are Debian packages;
//! `kubernetes-validate` is a PyPI package, taken from `$ITS_KUBERNETES_VALIDATE` or `PATH`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use its_analytics::settings::Settings;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use common::{Service, TestEnv};

/// The alerts the issue asks for, each with a runbook section of the same name.
const ALERTS: [&str; 12] = [
    "AnalyticsLatencyHigh",
    "GPUMemoryExhaustion",
    "ModelAccuracyDegradation",
    "ModelDriftHigh",
    "ServiceDown",
    "CameraDown",
    "BreakerOpen",
    "EventsDropped",
    "OutboxGrowing",
    "FramesDropped",
    "SupervisedChildRestarting",
    "ModelRolledBack",
];

/// The service's nodes in docker-compose.yml (the GPU node, its-analytics-gpu, is opt-in).
const NODES: [&str; 3] = ["its-analytics-1", "its-analytics-2", "its-analytics-3"];

/// Kinds kubernetes-validate has no schema for, which it reports as a warning (exit status 0).
/// Anything else without a schema (a typo in an apiVersion, say) would pass silently too, so the
/// test accepts these warnings only.
const KINDS_WITHOUT_SCHEMA: [&str; 3] = [
    "kind ServiceMonitor with api version monitoring.coreos.com/v1",
    "kind PrometheusRule with api version monitoring.coreos.com/v1",
    "kind Kustomization with api version kustomize.config.k8s.io/v1beta1",
];

/// The oldest Kubernetes the manifests are meant for; they are also checked against the newest
/// schemas the installed kubernetes-validate ships (its default).
const OLDEST_KUBERNETES: &str = "1.30";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Runs a tool to completion; a tool that is missing fails the test with how to install it.
fn run(program: &str, args: &[&str], dir: &Path, install: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it: {install}"))
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const PROMTOOL: &str = "Debian package prometheus (apt-get install --no-install-recommends prometheus)";

fn promtool(args: &[&str], dir: &Path) -> Output {
    run("promtool", args, dir, PROMTOOL)
}

/// A scalar as a string (compose renders environment values as strings, numbers or booleans).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_at<'a>(value: &'a Yaml, path: &[&str]) -> &'a str {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_str().unwrap_or_else(|| panic!("expected a string at {}", path.join(".")))
}

/// The `ITS__` variables of one service of a rendered compose file (mapping or `K=V` list).
fn compose_its_variables(rendered: &Yaml, service: &str) -> HashMap<String, String> {
    let environment = &rendered["services"][service]["environment"];
    let mut vars = HashMap::new();
    match environment {
        Yaml::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().expect("environment names are strings");
                if key.starts_with("ITS__") {
                    let value = scalar(v).unwrap_or_else(|| panic!("{service}: {key} has no value"));
                    vars.insert(key.to_string(), value);
                }
            }
        }
        Yaml::Sequence(items) => {
            for item in items {
                let entry = item.as_str().expect("environment entries are strings");
                if let Some((key, value)) = entry.split_once('=') {
                    if key.starts_with("ITS__") {
                        vars.insert(key.to_string(), value.to_string());
                    }
                }
            }
        }
        other => panic!("service {service} has no environment: {other:?}"),
    }
    vars
}

/// Container paths a compose service mounts (short `src:dst[:mode]` or long syntax).
fn compose_mount_targets(rendered: &Yaml, service: &str) -> Vec<String> {
    let volumes = rendered["services"][service]["volumes"].as_sequence().cloned().unwrap_or_default();
    volumes
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.split(':').nth(1).unwrap_or_default().to_string(),
            other => other["target"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

#[test]
fn compose_file_is_valid_and_uses_known_settings() {
    let root = root();
    let out = run(
        "docker-compose",
        &["-f", "docker-compose.yml", "config"],
        &root,
        "Debian package docker-compose, installed by scripts/setup.sh",
    );
    assert_success("docker-compose config", &out);
    let rendered: Yaml =
        serde_norway::from_str(&String::from_utf8_lossy(&out.stdout)).expect("docker-compose config prints YAML");

    for service in NODES.iter().chain(&[
        "its-analytics-gpu",
        "redis",
        "postgres",
        "jaeger",
        "prometheus",
        "grafana",
        "rtsp-camera",
        "camera-feed",
        "register-demo",
    ]) {
        assert!(!rendered["services"][service].is_null(), "docker-compose.yml lacks the service {service}");
    }

    // Every ITS__ variable of the nodes must load as a valid setting; each node has an id, an
    // address, an outbox and a host port of its own, and they share the database and Redis.
    let mut loaded = HashMap::new();
    let mut outboxes = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for service in NODES.iter().copied().chain(["its-analytics-gpu"]) {
        let vars = compose_its_variables(&rendered, service);
        assert!(vars.len() >= 4, "expected ITS__ settings on {service}: {vars:?}");
        let settings = Settings::load_with_env(None, Some(loadable_variables(vars.clone())))
            .unwrap_or_else(|e| panic!("the compose file's settings of {service} do not load: {e}"));
        assert_eq!(settings.redis.url, "redis://redis:6379", "{service}");
        assert_eq!(settings.redis.key_prefix, "its", "{service}: one cluster, one key prefix");
        assert_eq!(vars["ITS__POSTGRES__URL"], "postgres://postgres@postgres:5432/its", "{service}: one database");
        assert_eq!(settings.http.bind, "0.0.0.0:8080", "{service}");
        assert_eq!(vars.get("ITS__NODE__ID").map(String::as_str), Some(service), "{service}: ITS__NODE__ID");
        assert_eq!(
            vars.get("ITS__NODE__ADVERTISE_URL").cloned(),
            Some(format!("http://{service}:8080")),
            "{service}: ITS__NODE__ADVERTISE_URL (its name on the compose network, the port it binds)"
        );
        // The tokens file the service is told about is the one mounted into it.
        let tokens = &vars["ITS__AUTH__TOKENS_FILE"];
        let targets = compose_mount_targets(&rendered, service);
        assert!(targets.contains(tokens), "{service}: ITS__AUTH__TOKENS_FILE={tokens} is not mounted ({targets:?})");
        // The outbox's folder is a volume of its own (one process per outbox file).
        let outbox = Path::new(&vars["ITS__OUTBOX__PATH"]);
        let volume = rendered["services"][service]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .find(|v| v.split(':').nth(1).is_some_and(|target| outbox.starts_with(target)))
            .unwrap_or_else(|| panic!("{service}: the outbox {outbox:?} is on no volume"));
        let source = volume.split(':').next().unwrap().to_string();
        assert!(!rendered["volumes"][source.as_str()].is_null(), "{service}: the outbox is not on a named volume");
        assert!(outboxes.insert(source.clone()), "{service}: outbox volume {source} is another node's too");
        for port in rendered["services"][service]["ports"].as_sequence().expect("ports") {
            assert_eq!(port["target"].as_i64(), Some(8080), "{service}: {port:?}");
            let published = scalar(&port["published"]).expect("a published port");
            assert!(host_ports.insert(published.clone()), "{service}: host port {published} is taken");
        }
        loaded.insert(service, vars);
    }
    let node_ports: Vec<String> =
        NODES.iter().map(|n| scalar(&rendered["services"][n]["ports"][0]["published"]).unwrap()).collect();
    assert_eq!(node_ports, ["8081", "8082", "8083"], "the nodes' ports on the host");
    assert_eq!(loaded["its-analytics-1"]["ITS__TRACING__OTLP_ENDPOINT"], "http://jaeger:4318");
    assert_eq!(loaded["its-analytics-gpu"]["ITS__DEVICE__KIND"], "cuda");

    // The compose Prometheus scrapes every node.
    let prometheus_config = read(&root.join("deploy/prometheus/prometheus.yml"));
    for node in NODES {
        assert!(prometheus_config.contains(&format!("\"{node}:8080\"")), "prometheus.yml does not scrape {node}");
    }
    // The demo camera is registered through a node.
    let api = scalar(&rendered["services"]["register-demo"]["environment"]["ITS_API"]).unwrap_or_default();
    assert!(NODES.iter().any(|n| api == format!("http://{n}:8080")), "register-demo's ITS_API {api}");

    // The GPU node is opt-in and reserves an NVIDIA device; the CPU ones are always on.
    let gpu = &rendered["services"]["its-analytics-gpu"];
    let profiles: Vec<&str> =
        gpu["profiles"].as_sequence().map(|p| p.iter().filter_map(Yaml::as_str).collect()).unwrap_or_default();
    assert_eq!(profiles, ["gpu"], "its-analytics-gpu must be in the profile gpu only");
    for node in NODES {
        assert!(rendered["services"][node]["profiles"].is_null(), "{node} must run without a profile");
    }
    let device = &gpu["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(device["driver"].as_str(), Some("nvidia"), "GPU reservation: {device:?}");
    assert_eq!(
        scalar(&rendered["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]).as_deref(),
        Some("true")
    );

    // Prometheus keeps exemplars (the trace ids of analytics_latency_seconds) for Grafana's links.
    let prometheus_args: Vec<&str> = rendered["services"]["prometheus"]["command"]
        .as_sequence()
        .expect("the prometheus service's command is a list of flags")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        prometheus_args.contains(&"--enable-feature=exemplar-storage"),
        "the compose Prometheus must run with --enable-feature=exemplar-storage: {prometheus_args:?}"
    );

    // The demo tokens file holds the SHA-256 of the documented demo tokens, with their roles.
    #[derive(Deserialize)]
    struct Tokens {
        tokens: Vec<Token>,
    }
    #[derive(Deserialize)]
    struct Token {
        name: String,
        role: String,
        sha256: String,
    }
    let file: Tokens =
        toml::from_str(&read(&root.join("deploy/compose/tokens.toml"))).expect("deploy/compose/tokens.toml is TOML");
    for role in ["viewer", "operator", "admin"] {
        let token = format!("demo-{role}-token");
        let entry =
            file.tokens.iter().find(|t| t.role == role).unwrap_or_else(|| panic!("no {role} token in tokens.toml"));
        assert_eq!(
            entry.sha256,
            its_analytics::access::sha256_hex(&token),
            "tokens.toml: {} is not the sha256 of {token}",
            entry.name
        );
    }
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every alerting rule of a rule file: (name, rule).
fn alert_rules(rules: &Yaml) -> Vec<(String, Yaml)> {
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(name) = rule["alert"].as_str() {
                alerts.push((name.to_string(), rule.clone()));
            }
        }
    }
    alerts
}

#[test]
fn alert_rules_pass_promtool_and_link_their_runbooks() {
    let dir = root().join("deploy/prometheus");
    assert_success("promtool check rules alerts.yml", &promtool(&["check", "rules", "alerts.yml"], &dir));
    assert_success("promtool test rules alerts_test.yml", &promtool(&["test", "rules", "alerts_test.yml"], &dir));
    assert_success("promtool check config prometheus.yml", &promtool(&["check", "config", "prometheus.yml"], &dir));

    let rules = yaml(&dir.join("alerts.yml"));
    let alerts = alert_rules(&rules);
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS.into_iter().collect(), "alerts.yml has other alerts than expected");

    let operations = read(&root().join("docs/OPERATIONS.md"));
    let anchors: BTreeSet<String> =
        operations.lines().filter(|l| l.starts_with('#')).map(|l| anchor(l.trim_start_matches('#'))).collect();
    for (name, rule) in &alerts {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity:?}");
        for key in ["summary", "description"] {
            assert!(!rule["annotations"][key].as_str().unwrap_or_default().is_empty(), "{name}: no {key}");
        }
        let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let expected = format!("docs/OPERATIONS.md#{}", name.to_lowercase());
        assert_eq!(runbook, expected, "{name}: runbook_url");
        assert!(
            anchors.contains(&name.to_lowercase()),
            "docs/OPERATIONS.md has no heading `{name}` (anchor of {runbook})"
        );
    }

    // Each alert is tested both ways: firing, and quiet where it must be.
    let tests = yaml(&dir.join("alerts_test.yml"));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().cloned().unwrap_or_default() {
            let name = case["alertname"].as_str().unwrap_or_default().to_string();
            match case["exp_alerts"].as_sequence() {
                Some(expected) if !expected.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for name in ALERTS {
        assert!(fires.contains(name), "alerts_test.yml never shows {name} firing");
        assert!(quiet.contains(name), "alerts_test.yml never shows {name} staying quiet");
    }
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/k8s")
}

fn k8s_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn kustomization() -> Yaml {
    yaml(&k8s_dir().join("kustomization.yaml"))
}

/// What `kubectl kustomize deploy/k8s` makes of the manifests, as far as kustomization.yaml uses
/// kustomize: every document of the `resources` files, in order, with the kustomization's
/// `namespace` (when it sets one) and `images` applied.
fn kustomize_render() -> Vec<Yaml> {
    let kustomization = kustomization();
    let namespace = kustomization["namespace"].as_str().map(str::to_string);
    let images = kustomization["images"].as_sequence().cloned().unwrap_or_default();
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_sequence().expect("kustomization.yaml resources") {
        let file = resource.as_str().expect("a resource is a file name");
        for mut doc in yaml_documents(&k8s_dir().join(file)) {
            let namespaced = doc["kind"] != "Namespace";
            if let (Some(ns), Some(meta), true) = (&namespace, doc["metadata"].as_mapping_mut(), namespaced) {
                meta.insert("namespace".into(), ns.as_str().into());
            }
            let containers = doc["spec"]["template"]["spec"]["containers"].as_sequence_mut();
            for container in containers.into_iter().flatten() {
                let image = container["image"].as_str().unwrap_or_default().to_string();
                let name = image.split(':').next().unwrap_or_default();
                if let Some(rule) = images.iter().find(|i| i["name"].as_str() == Some(name)) {
                    let new_name = rule["newName"].as_str().unwrap_or(name);
                    let tag = rule["newTag"].as_str().map(str::to_string).unwrap_or_else(|| {
                        image.split_once(':').map(|(_, tag)| tag.to_string()).unwrap_or("latest".into())
                    });
                    container["image"] = format!("{new_name}:{tag}").into();
                }
            }
            objects.push(doc);
        }
    }
    objects
}

/// Every object of the rendered manifests, by `kind/name`.
fn k8s_objects() -> BTreeMap<String, Yaml> {
    let mut objects = BTreeMap::new();
    for doc in kustomize_render() {
        let kind = doc["kind"].as_str().expect("an object without kind").to_string();
        let name = doc["metadata"]["name"].as_str().expect("an object without name").to_string();
        let key = format!("{kind}/{name}");
        assert!(objects.insert(key.clone(), doc).is_none(), "{key} appears twice in the rendered manifests");
    }
    objects
}

/// The sections of the cluster's settings, which another branch adds to `Settings`.
const CLUSTER_SECTIONS: [&str; 2] = ["node", "cluster"];

/// Whether the service's settings have a section `name`. Until they have the cluster's sections,
/// the tests below cannot load those keys and leave them out of what they load (saying so on
/// stderr); once the settings know a section, its keys are loaded and checked like every other.
fn settings_know(section: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe.toml");
    std::fs::write(&file, format!("[{section}]\n")).unwrap();
    match Settings::load_with_env(Some(&file), Some(HashMap::new())) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains(&format!("unknown field `{section}`")),
    }
}

/// `vars` less the variables of cluster sections the settings do not have yet.
fn loadable_variables(mut vars: HashMap<String, String>) -> HashMap<String, String> {
    for section in CLUSTER_SECTIONS.into_iter().filter(|s| !settings_know(s)) {
        let prefix = format!("ITS__{}__", section.to_uppercase());
        let left_out: Vec<String> = vars.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
        if !left_out.is_empty() {
            eprintln!("the settings have no [{section}] section yet: not loaded {left_out:?}");
        }
        vars.retain(|k, _| !k.starts_with(&prefix));
    }
    vars
}

/// `config` less the tables of cluster sections the settings do not have yet.
fn loadable_config(mut config: toml::Table) -> toml::Table {
    for section in CLUSTER_SECTIONS.into_iter().filter(|s| !settings_know(s)) {
        if let Some(table) = config.remove(section) {
            eprintln!("the settings have no [{section}] section yet: not loaded [{section}] {table}");
        }
    }
    config
}

#[test]
fn kubernetes_manifests_validate() {
    let program = std::env::var("ITS_KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let files: Vec<String> = k8s_files().iter().map(|p| p.display().to_string()).collect();
    assert!(files.len() >= 12, "expected the manifests in deploy/k8s: {files:?}");
    let install = "PyPI package kubernetes-validate (pip install kubernetes-validate), or set ITS_KUBERNETES_VALIDATE";

    let expected_passed: BTreeSet<&str> = [
        "namespace/its-analytics",
        "configmap/its-analytics-config",
        "configmap/its-analytics-adapter-rules",
        "secret/its-analytics-tokens",
        "secret/its-analytics-connections",
        "statefulset/its-analytics",
        "service/its-analytics",
        "service/its-analytics-nodes",
        "poddisruptionbudget/its-analytics",
        "horizontalpodautoscaler/its-analytics",
    ]
    .into_iter()
    .collect();
    for version in [Some(OLDEST_KUBERNETES), None] {
        let mut args = vec!["--strict"];
        if let Some(v) = version {
            args.extend(["--kubernetes-version", v]);
        }
        args.extend(files.iter().map(String::as_str));
        let out = run(&program, &args, &root(), install);
        let what = format!("{program} {}", args.join(" "));
        assert_success(&what, &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut passed = BTreeSet::new();
        for line in stdout.lines() {
            if line.starts_with("INFO ") && line.contains(" passed for resource ") {
                let resource = line.split(" passed for resource ").nth(1).unwrap().split_whitespace().next().unwrap();
                passed.insert(resource.to_string());
            } else if line.starts_with("WARN ") {
                assert!(
                    KINDS_WITHOUT_SCHEMA.iter().any(|k| line.contains(k)),
                    "{what}: unexpected warning (no schema?):\n{line}"
                );
            } else if !line.trim().is_empty() {
                panic!("{what}: unexpected output:\n{line}");
            }
        }
        let passed: BTreeSet<&str> = passed.iter().map(String::as_str).collect();
        assert_eq!(passed, expected_passed, "{what}: validated resources differ:\n{stdout}");
    }

    // What the schemas cannot tell about the pods (how the manifests fit together is
    // kubernetes_manifests_hang_together's).
    let objects = k8s_objects();
    let pod = &objects["StatefulSet/its-analytics"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(str_at(container, &["livenessProbe", "httpGet", "path"]), "/health/live");
    assert_eq!(str_at(container, &["startupProbe", "httpGet", "path"]), "/health/live");
    assert_eq!(str_at(container, &["readinessProbe", "httpGet", "path"]), "/health/ready");
    assert_eq!(scalar(&container["resources"]["limits"]["nvidia.com/gpu"]).as_deref(), Some("1"), "one GPU per pod");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
}

/// A label selector (`matchLabels` or a Service's `selector`) as pairs; never empty.
fn selector_pairs(selector: &Yaml, what: &str) -> Vec<(String, Yaml)> {
    let map = selector.as_mapping().unwrap_or_else(|| panic!("{what}: no selector"));
    assert!(!map.is_empty(), "{what}: an empty selector selects everything");
    map.iter().map(|(k, v)| (k.as_str().expect("label names are strings").to_string(), v.clone())).collect()
}

/// Whether `selector` selects objects with `labels`.
fn selects(selector: &Yaml, labels: &Yaml, what: &str) -> bool {
    selector_pairs(selector, what).iter().all(|(k, v)| &labels[k.as_str()] == v)
}

/// A container's `$(NAME)` references resolved against the variables before it (the kubelet
/// leaves a reference to a later or unknown variable as it is, silently, so the test refuses it).
fn expand_references(value: &str, earlier: &HashMap<String, String>, what: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').map(|e| start + e).unwrap_or_else(|| panic!("{what}: unclosed $("));
        let name = &rest[start + 2..end];
        let value =
            earlier.get(name).unwrap_or_else(|| panic!("{what}: $({name}) is not a variable defined before it"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The container's variables as the kubelet gives them to the process of pod `pod_name`: literal
/// values with `$(NAME)` expanded, the pod's name for `fieldRef: metadata.name`, Secret keys from
/// the rendered Secrets.
fn container_environment(
    container: &Yaml,
    objects: &BTreeMap<String, Yaml>,
    pod_name: &str,
) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("a variable's name").to_string();
        let value = if let Some(v) = scalar(&var["value"]) {
            expand_references(&v, &vars, &name)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(field, "metadata.name", "{name}: only the pod's name is used from the downward API");
            pod_name.to_string()
        } else {
            let secret = &var["valueFrom"]["secretKeyRef"];
            let secret_name = secret["name"].as_str().unwrap_or_else(|| panic!("{name}: no value"));
            let object = objects
                .get(&format!("Secret/{secret_name}"))
                .unwrap_or_else(|| panic!("{name}: Secret {secret_name} is not in the manifests"));
            let key = secret["key"].as_str().expect("a secretKeyRef key");
            object["stringData"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: Secret {secret_name} has no key {key}"))
                .to_string()
        };
        assert!(vars.insert(name.clone(), value).is_none(), "{name} is set twice");
    }
    vars
}

/// A rule of prometheus-adapter's configuration, as far as this test reads it.
struct AdapterRule {
    /// The metric the custom metrics API serves (`name.as`).
    serves: String,
    /// The series the rule reads from Prometheus (`seriesQuery`'s metric name).
    series: String,
    metrics_query: String,
    resources: Yaml,
}

fn adapter_rules(objects: &BTreeMap<String, Yaml>) -> Vec<AdapterRule> {
    let config_map = &objects["ConfigMap/its-analytics-adapter-rules"];
    let text = config_map["data"]["config.yaml"].as_str().expect("the adapter's ConfigMap has config.yaml");
    let config: Yaml = serde_norway::from_str(text).expect("the adapter's config.yaml is YAML");
    let rules = config["rules"].as_sequence().expect("the adapter's config has rules");
    rules
        .iter()
        .map(|rule| {
            let query = rule["seriesQuery"].as_str().expect("a rule's seriesQuery");
            let series = query.split('{').next().unwrap().trim().to_string();
            assert!(
                !series.is_empty() && series.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "seriesQuery {query:?}: name the series (`name{{...}}`), so this test can check it exists"
            );
            // `matches` must select exactly that series (a regex anchored on its name).
            let matches = rule["name"]["matches"].as_str().unwrap_or_default();
            assert_eq!(matches, format!("^{series}$"), "rule on {series}: name.matches");
            let serves = rule["name"]["as"].as_str().unwrap_or_default().to_string();
            assert!(!serves.is_empty(), "rule on {series}: name.as names the metric served");
            AdapterRule {
                serves,
                series,
                metrics_query: rule["metricsQuery"].as_str().expect("a rule's metricsQuery").to_string(),
                resources: rule["resources"].clone(),
            }
        })
        .collect()
}

/// The series names of the service's `/metrics` (its own registry, in process), with their types:
/// counters as `NAME_total`, histograms as `_bucket`, `_sum`, `_count`. A family with labels is
/// exposed (its `# TYPE` line too) from its first series on, so the device families get the series
/// an inference worker gives them for its device (src/actors/gpu/worker.rs).
fn exposed_series() -> BTreeMap<String, String> {
    let metrics = its_analytics::metrics::Metrics::new();
    let device = its_analytics::metrics::DeviceLabels { device: "cuda:0".into() };
    metrics.device_busy.get_or_create(&device).inc_by(0.25);
    metrics.queue_depth.get_or_create(&device).set(3);
    metrics.device_memory.get_or_create(&device).set(50.0);
    let text = metrics.encode();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (family, kind) = rest.split_once(' ').expect("# TYPE NAME TYPE");
        let names = match kind {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{family}{s}")).collect(),
            _ => vec![family.to_string()],
        };
        for name in names {
            series.insert(name, kind.to_string());
        }
    }
    assert!(series.len() > 10, "no # TYPE lines in the service's /metrics:\n{text}");
    series
}

/// The manifests fit together as `kubectl apply -k deploy/k8s` sends them: what selects what, what
/// names what, and what the HPA needs from prometheus-adapter and the service.
#[test]
fn kubernetes_manifests_hang_together() {
    // kustomization.yaml applies every manifest of the folder.
    let listed: BTreeSet<String> =
        kustomization()["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    let on_disk: BTreeSet<String> = k8s_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml resources and the files of deploy/k8s differ");

    let objects = k8s_objects();
    let of_kind = |kind: &str| -> Vec<&Yaml> { objects.values().filter(|o| o["kind"] == kind).collect() };
    let namespace_of = |o: &Yaml| o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();

    // One StatefulSet; its selector selects its own pods.
    let sets = of_kind("StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet");
    let set = sets[0];
    let set_name = str_at(set, &["metadata", "name"]);
    let namespace = namespace_of(set);
    assert!(objects.contains_key(&format!("Namespace/{namespace}")), "the manifests do not create {namespace}");
    let template = &set["spec"]["template"];
    let pod_labels = &template["metadata"]["labels"];
    assert!(
        selects(&set["spec"]["selector"]["matchLabels"], pod_labels, "StatefulSet"),
        "the StatefulSet's selector does not select its pod template's labels {pod_labels:?}"
    );
    assert_eq!(str_at(set, &["spec", "podManagementPolicy"]), "Parallel");
    assert_eq!(str_at(set, &["spec", "updateStrategy", "type"]), "RollingUpdate");
    let pod = &template["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    let container = &containers[0];
    let container_ports: Vec<(String, i64)> = containers
        .iter()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["containerPort"].as_i64().unwrap()))
        .collect();

    // Every Service selects the pods, in their namespace, and targets a container port.
    let services = of_kind("Service");
    for service in &services {
        let name = str_at(service, &["metadata", "name"]);
        assert_eq!(namespace_of(service), namespace, "Service {name}: namespace");
        assert!(
            selects(&service["spec"]["selector"], pod_labels, name),
            "Service {name}: its selector does not select the StatefulSet's pods {pod_labels:?}"
        );
        for port in service["spec"]["ports"].as_sequence().expect("a Service's ports") {
            let target = &port["targetPort"];
            let found = match target {
                Yaml::String(named) => container_ports.iter().any(|(n, _)| n == named),
                Yaml::Number(n) => container_ports.iter().any(|(_, p)| Some(*p) == n.as_i64()),
                _ => container_ports.iter().any(|(_, p)| Some(*p) == port["port"].as_i64()),
            };
            assert!(found, "Service {name}: targetPort {target:?} is no container port {container_ports:?}");
        }
    }

    // serviceName names a headless Service of the set that publishes pods before they are Ready.
    let headless_name = str_at(set, &["spec", "serviceName"]);
    let headless = services
        .iter()
        .find(|s| s["metadata"]["name"] == headless_name)
        .unwrap_or_else(|| panic!("the StatefulSet's serviceName {headless_name} is not a Service of the manifests"));
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"), "{headless_name} must be headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true), "{headless_name}");

    // The PodDisruptionBudget covers the pods, one at a time.
    let pdb = &objects[&format!("PodDisruptionBudget/{set_name}")];
    assert_eq!(namespace_of(pdb), namespace);
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels, "PodDisruptionBudget"),
        "the PodDisruptionBudget does not select the StatefulSet's pods"
    );
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1), "PodDisruptionBudget maxUnavailable");

    // The ServiceMonitor selects exactly the API Service (once per pod; job its-analytics, which
    // the alert rules use) and scrapes /metrics on a port of it.
    let monitor = &objects["ServiceMonitor/its-analytics"];
    let watched: Vec<&str> = monitor["spec"]["namespaceSelector"]["matchNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(watched.contains(&namespace.as_str()), "the ServiceMonitor does not watch {namespace}");
    let monitored: Vec<&str> = services
        .iter()
        .filter(|s| selects(&monitor["spec"]["selector"]["matchLabels"], &s["metadata"]["labels"], "ServiceMonitor"))
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(monitored, ["its-analytics"], "the Services the ServiceMonitor selects");
    let api = &objects["Service/its-analytics"];
    for endpoint in monitor["spec"]["endpoints"].as_sequence().expect("ServiceMonitor endpoints") {
        assert!(
            api["spec"]["ports"].as_sequence().unwrap().iter().any(|p| p["name"] == endpoint["port"]),
            "ServiceMonitor endpoint port {:?} is not a port of Service its-analytics",
            endpoint["port"]
        );
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    }

    // Volumes: every mount names a volume or a claim template, each exactly once; ConfigMaps and
    // Secrets named are in the manifests.
    let volumes: Vec<&Yaml> = pod["volumes"].as_sequence().map(|v| v.iter().collect()).unwrap_or_default();
    let templates: Vec<&Yaml> =
        set["spec"]["volumeClaimTemplates"].as_sequence().map(|v| v.iter().collect()).unwrap_or_default();
    let volume_names: Vec<&str> = volumes.iter().map(|v| v["name"].as_str().unwrap()).collect();
    let claim_names: Vec<&str> = templates.iter().map(|t| t["metadata"]["name"].as_str().unwrap()).collect();
    let all_names: Vec<&str> = volume_names.iter().chain(&claim_names).copied().collect();
    assert_eq!(all_names.len(), all_names.iter().collect::<BTreeSet<_>>().len(), "volume names twice: {all_names:?}");
    let mut mounted = BTreeSet::new();
    for c in containers {
        for mount in c["volumeMounts"].as_sequence().cloned().unwrap_or_default() {
            let name = mount["name"].as_str().unwrap().to_string();
            assert!(all_names.contains(&name.as_str()), "volumeMount {name} names no volume or claim {all_names:?}");
            mounted.insert(name);
        }
    }
    for name in &all_names {
        assert!(mounted.contains(*name), "volume {name} is mounted nowhere");
    }
    for volume in &volumes {
        if let Some(name) = volume["configMap"]["name"].as_str() {
            assert!(objects.contains_key(&format!("ConfigMap/{name}")), "volume of ConfigMap {name}, not in the set");
        }
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            assert!(objects.contains_key(&format!("Secret/{name}")), "volume of Secret {name}, not in the set");
        }
    }

    // The outbox: the configured path lies on the pod's own claim, which one pod writes.
    let config_text = objects["ConfigMap/its-analytics-config"]["data"]["config.toml"].as_str().unwrap();
    let config: toml::Table = toml::from_str(config_text).expect("config.toml is TOML");
    let env = container_environment(container, &objects, &format!("{set_name}-0"));
    let outbox = env
        .get("ITS__OUTBOX__PATH")
        .cloned()
        .or_else(|| config.get("outbox").and_then(|o| o.get("path")).and_then(|p| p.as_str()).map(str::to_string))
        .expect("the ConfigMap (or ITS__OUTBOX__PATH) sets outbox.path");
    let outbox_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(&outbox).starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("outbox.path {outbox} is under no volume mount"));
    let claim = outbox_mount["name"].as_str().unwrap();
    let template = templates
        .iter()
        .find(|t| t["metadata"]["name"].as_str() == Some(claim))
        .unwrap_or_else(|| panic!("outbox.path {outbox} is on volume {claim}, not on a volumeClaimTemplate"));
    let modes: Vec<&str> =
        template["spec"]["accessModes"].as_sequence().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert_eq!(modes, ["ReadWriteOnce"], "the outbox claim: one writer");
    assert_ne!(outbox_mount["readOnly"].as_bool(), Some(true), "the outbox mount is read-only");

    // The node's identity: its pod name, and a URL on the headless Service's DNS name.
    let node_id = env.get("ITS__NODE__ID").expect("ITS__NODE__ID");
    assert_eq!(node_id, &format!("{set_name}-0"), "ITS__NODE__ID must be the pod's name (fieldRef metadata.name)");
    let http_port = container_ports.iter().find(|(n, _)| n == "http").expect("a container port named http").1;
    assert_eq!(
        env.get("ITS__NODE__ADVERTISE_URL").map(String::as_str),
        Some(format!("http://{set_name}-0.{headless_name}.{namespace}.svc.cluster.local:{http_port}").as_str()),
        "ITS__NODE__ADVERTISE_URL"
    );

    // Stopping: preStop drains with the configuration `serve` has, and the grace period covers
    // the drain and the outbox's delivery after SIGTERM.
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Yaml::as_str).collect();
    let pre_stop: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("a preStop exec hook")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(pre_stop[..2], ["its-analytics", "drain"], "preStop");
    assert_eq!(args[0], "serve");
    assert_eq!(pre_stop[2..], args[1..], "preStop drain and serve must read the same configuration");
    let drain_timeout_ms = env
        .get("ITS__CLUSTER__DRAIN_TIMEOUT_MS")
        .map(|v| v.parse::<i64>().expect("ITS__CLUSTER__DRAIN_TIMEOUT_MS"))
        .or_else(|| config.get("cluster").and_then(|c| c.get("drain_timeout_ms")).and_then(|v| v.as_integer()))
        .expect("configmap.yaml sets cluster.drain_timeout_ms, the preStop hook's limit");
    const OUTBOX_DRAIN_S: i64 = 15;
    let grace = pod["terminationGracePeriodSeconds"].as_i64().expect("terminationGracePeriodSeconds");
    assert!(
        grace * 1000 > drain_timeout_ms + OUTBOX_DRAIN_S * 1000,
        "terminationGracePeriodSeconds {grace} does not cover cluster.drain_timeout_ms {drain_timeout_ms} + \
         {OUTBOX_DRAIN_S} s of outbox delivery"
    );

    // kustomization.yaml's images: rule applies to the container (or it silently does nothing).
    let image_rules = kustomization()["images"].as_sequence().cloned().unwrap_or_default();
    for rule in &image_rules {
        let name = rule["newName"].as_str().or(rule["name"].as_str()).unwrap();
        assert!(
            container["image"].as_str().unwrap().starts_with(&format!("{name}:")),
            "kustomization.yaml images: {rule:?} does not apply to the container's image {:?}",
            container["image"]
        );
    }

    // The HPA scales the StatefulSet, slowly down.
    let hpa = &objects[&format!("HorizontalPodAutoscaler/{set_name}")];
    assert_eq!(namespace_of(hpa), namespace);
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (target["apiVersion"].as_str(), target["kind"].as_str(), target["name"].as_str()),
        (Some("apps/v1"), Some("StatefulSet"), Some(set_name)),
        "the HPA's scaleTargetRef"
    );
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2, "a lost node needs a survivor: minReplicas >= 2");
    let up = hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"].as_i64().unwrap_or(0);
    let down = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"].as_i64().expect("scaleDown window");
    assert!(down >= 300 && down > up, "scale-down must be slower than scale-up: windows {down} s and {up} s");

    // Every metric the HPA asks for is served by an adapter rule, every series a rule reads is on
    // the service's /metrics, counters through a rate and gauges as they are, per pod.
    let asked: Vec<&str> = hpa["spec"]["metrics"]
        .as_sequence()
        .expect("HPA metrics")
        .iter()
        .map(|m| {
            assert_eq!(m["type"].as_str(), Some("Pods"), "HPA metrics are per pod: {m:?}");
            m["pods"]["metric"]["name"].as_str().expect("a Pods metric's name")
        })
        .collect();
    assert!(asked.contains(&"its_device_busy_ratio"), "the HPA scales on device busy time: {asked:?}");
    let rules = adapter_rules(&objects);
    let exposed = exposed_series();
    for metric in &asked {
        assert!(
            rules.iter().any(|r| r.serves == *metric),
            "the HPA asks for {metric}, which no prometheus-adapter rule serves ({:?})",
            rules.iter().map(|r| &r.serves).collect::<Vec<_>>()
        );
    }
    for rule in &rules {
        let kind = exposed.get(&rule.series).unwrap_or_else(|| {
            panic!(
                "the adapter's rule for {} reads {}, which the service does not export (its series: {:?})",
                rule.serves,
                rule.series,
                exposed.keys().collect::<Vec<_>>()
            )
        });
        let rated =
            ["rate(", "irate(", "increase("].iter().any(|f| rule.metrics_query.contains(&format!("{f}<<.Series>>")));
        assert_eq!(
            rated,
            kind == "counter",
            "{}: {} is a {kind}; a counter is read through rate(), a gauge as it is: {}",
            rule.serves,
            rule.series,
            rule.metrics_query
        );
        for part in ["<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"] {
            assert!(rule.metrics_query.contains(part), "{}: metricsQuery without {part}", rule.serves);
        }
        for label in ["namespace", "pod"] {
            assert_eq!(
                rule.resources["overrides"][label]["resource"].as_str(),
                Some(label),
                "{}: the label {label} must map to the {label} resource (the Operator's target labels)",
                rule.serves
            );
        }
    }
    let adapter = &objects["ConfigMap/its-analytics-adapter-rules"];
    assert_ne!(namespace_of(adapter), namespace, "the adapter's rules belong in the adapter's namespace");
}

#[test]
fn prometheus_rule_carries_the_alert_rules_of_alerts_yml() {
    let objects = k8s_objects();
    let rule = &objects["PrometheusRule/its-analytics"];
    assert_eq!(rule["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let compose_rules = yaml(&root().join("deploy/prometheus/alerts.yml"));
    assert!(compose_rules["groups"].as_sequence().is_some_and(|g| !g.is_empty()), "alerts.yml has no groups");
    assert!(
        rule["spec"]["groups"] == compose_rules["groups"],
        "deploy/k8s/prometheusrule.yaml spec.groups differ from deploy/prometheus/alerts.yml groups; \
         regenerate it with the command in its header"
    );
}

#[test]
fn kubernetes_config_and_environment_load_as_settings() {
    let objects = k8s_objects();
    let config_map = &objects["ConfigMap/its-analytics-config"];
    let set = &objects["StatefulSet/its-analytics"];
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // `serve --config <the ConfigMap's mount>/config.toml`
    let args: Vec<&str> = container["args"].as_sequence().expect("args").iter().filter_map(Yaml::as_str).collect();
    let config_path = args.iter().skip_while(|a| **a != "--config").nth(1).expect("serve --config FILE");
    let volume_of = |mount_path: &str| -> Yaml {
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| mount_path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{mount_path} is not under a volume mount"))
            .clone();
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume")
            .clone()
    };
    let config_volume = volume_of(config_path);
    assert_eq!(config_volume["configMap"]["name"].as_str(), Some("its-analytics-config"));
    let config_key = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    let config_text =
        config_map["data"][config_key].as_str().unwrap_or_else(|| panic!("the ConfigMap has no {config_key}"));

    // The tokens file is the tokens Secret's key, mounted where the config says.
    let config: toml::Table = toml::from_str(config_text).expect("the ConfigMap's config.toml is TOML");
    let tokens_file = config["auth"]["tokens_file"].as_str().expect("auth.tokens_file");
    let tokens_volume = volume_of(tokens_file);
    let secret_name = tokens_volume["secret"]["secretName"].as_str().expect("tokens from a Secret");
    let key = Path::new(tokens_file).file_name().unwrap().to_str().unwrap();
    assert!(
        objects[&format!("Secret/{secret_name}")]["stringData"][key].as_str().is_some(),
        "Secret {secret_name} has no {key}"
    );

    // The pod's ITS__ variables as pod its-analytics-0 gets them, secret ones with the
    // placeholders of secret.yaml.
    let mut vars = container_environment(container, &objects, "its-analytics-0");
    vars.retain(|name, _| name.starts_with("ITS__"));
    assert!(vars.contains_key("ITS__POSTGRES__URL") && vars.contains_key("ITS__REDIS__URL"), "{vars:?}");
    assert!(vars.contains_key("ITS__NODE__ID") && vars.contains_key("ITS__NODE__ADVERTISE_URL"), "{vars:?}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(config_key);
    std::fs::write(&file, toml::to_string(&loadable_config(config)).unwrap()).unwrap();
    let settings = Settings::load_with_env(Some(&file), Some(loadable_variables(vars)))
        .unwrap_or_else(|e| panic!("the ConfigMap's config.toml with the StatefulSet's variables does not load: {e}"));
    assert_eq!(settings.http.bind, "0.0.0.0:8080");
    assert_eq!(settings.outbox.path, Path::new("/var/lib/its-analytics/outbox.redb"));
}

/// Every PromQL query of the dashboard, with Grafana's variables replaced.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = root().join("deploy/grafana/dashboards/its-analytics.json");
    let dashboard: Json =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            let expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$camera", ".*");
            queries.push((title.to_string(), expr));
        }
    }
    queries
}

#[test]
fn grafana_dashboard_queries_parse_and_provisioning_points_at_prometheus() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 13, "{queries:?}");
    // promtool parses each query as a recording rule.
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(i, (title, expr))| {
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr, "labels": {"panel": title}})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yml"),
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    assert_success(
        "promtool check rules (dashboard queries)",
        &promtool(&["check", "rules", "dashboard.yml"], dir.path()),
    );

    let used = metric_names(queries.iter().map(|(_, e)| e.as_str()));
    for metric in [
        "its_camera_up",
        "its_frames_decoded",
        "its_frames_processed",
        "its_events",
        "analytics_latency_seconds",
        "its_frames_dropped",
        "its_device_queue_depth",
        "its_batch_size",
        "its_inference_latency_seconds",
        "gpu_memory_utilization_percent",
        "its_breaker_state",
        "its_outbox_backlog",
        "its_pool_connections",
    ] {
        assert!(used.contains(metric), "the dashboard shows no {metric}");
    }

    let provisioning = root().join("deploy/grafana/provisioning");
    let datasources = yaml(&provisioning.join("datasources/datasources.yml"));
    let prometheus = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "prometheus")
        .expect("a Prometheus data source")
        .clone();
    assert_eq!(prometheus["url"].as_str(), Some("http://prometheus:9090"));
    // Exemplars labelled trace_id link to the Jaeger data source, by its fixed uid.
    let jaeger = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "jaeger")
        .expect("a Jaeger data source")
        .clone();
    let jaeger_uid = jaeger["uid"].as_str().expect("the Jaeger data source has a fixed uid");
    let destinations = prometheus["jsonData"]["exemplarTraceIdDestinations"]
        .as_sequence()
        .expect("the Prometheus data source has jsonData.exemplarTraceIdDestinations");
    assert!(
        destinations.iter().any(|d| d["name"] == "trace_id" && d["datasourceUid"].as_str() == Some(jaeger_uid)),
        "no exemplar destination maps trace_id to the Jaeger data source {jaeger_uid:?}: {destinations:?}"
    );
    // The latency panel asks for those exemplars.
    let dashboard: Json = serde_json::from_str(&read(&root().join("deploy/grafana/dashboards/its-analytics.json")))
        .expect("dashboard JSON");
    let latency_targets: Vec<&Json> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "timeseries")
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["expr"].as_str().is_some_and(|e| e.contains("analytics_latency_seconds_bucket")))
        .collect();
    assert!(!latency_targets.is_empty(), "no latency time series panel");
    for target in latency_targets {
        assert_eq!(target["exemplar"], Json::Bool(true), "latency target without exemplars: {target}");
    }
    let providers = yaml(&provisioning.join("dashboards/dashboards.yml"));
    let path = providers["providers"][0]["options"]["path"].as_str().expect("a dashboards path");
    let compose = read(&root().join("docker-compose.yml"));
    assert!(
        compose.contains(&format!("./deploy/grafana/dashboards:{path}:ro")),
        "docker-compose.yml does not mount the dashboards at {path}"
    );
}

/// Metric family names (counters without `_total`, histograms without `_bucket`, `_sum`,
/// `_count`) of the service's own metrics that PromQL expressions use.
fn metric_names<'a>(exprs: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if ["its_", "analytics_", "gpu_", "ml_"].iter().any(|p| word.starts_with(p)) {
                let family =
                    ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
                names.insert(family.to_string());
            }
        }
    }
    names
}

/// A Prometheus server of the test's own, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `its-analytics` and evaluates `alerts.yml` every second.
    fn start(target: &str) -> (Self, u16) {
        let dir = tempfile::tempdir().unwrap();
        let rules = root().join("deploy/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: its-analytics\n    metrics_path: /metrics\n    static_configs:\n      \
             - targets: [{target:?}]\n",
            rules = rules.display().to_string(),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = common::free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus ({e}); install: {PROMTOOL}"));
        (Self { child, base: format!("http://127.0.0.1:{port}"), log, _dir: dir }, port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `data.result` of an instant query, once Prometheus answers it with success.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Option<Vec<Json>> {
        let reply: Json = client
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (reply["status"] == "success").then(|| reply["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_service_and_evaluates_every_alert() {
    let env = TestEnv::new().await;
    // CPU inference whatever the machine has, so the device series is `device="cpu"`.
    let svc = Service::start_with(&env, &[("ITS__DEVICE__KIND", "cpu")]).await;
    let client = reqwest::Client::new();
    let target = svc.base.trim_start_matches("http://").to_string();
    let (prometheus, port) = Prometheus::start(&target);
    common::wait_listening("prometheus", port).await;
    let context = |what: &str| {
        format!("{what}\n--- prometheus log\n{}\n--- service log\n{}", prometheus.log_text(), svc.log_text())
    };

    // The scrape works: up == 1 for the service's target.
    let up = common::eventually("up{job=\"its-analytics\"} == 1", Duration::from_secs(60), || async {
        let result = prometheus.query(&client, "up{job=\"its-analytics\"}").await?;
        let sample = result.first()?;
        (sample["value"][1] == "1").then(|| sample.clone())
    })
    .await;
    assert_eq!(up["metric"]["instance"].as_str(), Some(target.as_str()), "{}", context("up"));

    // The service's own series arrive: both pools, both kinds.
    let pools = common::eventually("its_pool_connections series", Duration::from_secs(30), || async {
        let result = prometheus.query(&client, "its_pool_connections").await?;
        let pools: BTreeSet<String> = result
            .iter()
            .filter_map(|s| Some(format!("{}/{}", s["metric"]["pool"].as_str()?, s["metric"]["kind"].as_str()?)))
            .collect();
        (pools.len() >= 4).then_some(pools)
    })
    .await;
    for pool in ["postgres/idle", "postgres/in_use", "redis/idle", "redis/in_use"] {
        assert!(pools.contains(pool), "{}", context(&format!("no its_pool_connections for {pool}: {pools:?}")));
    }

    // The series the alerts use that an idle service (no camera) exports, through Prometheus' API:
    // the outbox backlog (a plain gauge), both breakers (created closed when the publisher starts),
    // the CPU device's memory (read at each scrape), the latency histogram (always exported, with
    // zero counts until the first event).
    for promql in [
        "its_outbox_backlog{job=\"its-analytics\"}",
        "its_breaker_state{job=\"its-analytics\",breaker=\"redis\"}",
        "its_breaker_state{job=\"its-analytics\",breaker=\"postgres\"}",
        "gpu_memory_utilization_percent{job=\"its-analytics\",device=\"cpu\"}",
        "analytics_latency_seconds_bucket{job=\"its-analytics\"}",
        "its_events_dropped_total{job=\"its-analytics\"}",
    ] {
        let samples = common::eventually(promql, Duration::from_secs(30), || async {
            let result = prometheus.query(&client, promql).await?;
            (!result.is_empty()).then_some(result)
        })
        .await;
        for sample in &samples {
            let value: f64 = sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            assert!(value.is_finite() && value >= 0.0, "{}", context(&format!("{promql}: {sample}")));
            if promql.starts_with("its_breaker_state") || promql.starts_with("its_outbox_backlog") {
                assert_eq!(value, 0.0, "{}", context(&format!("{promql} on an idle, healthy service: {sample}")));
            }
            if promql.starts_with("gpu_memory") {
                assert!(value > 0.0 && value <= 100.0, "{}", context(&format!("{promql}: {sample}")));
            }
        }
        // 0.1 s, the threshold of AnalyticsLatencyHigh, is a bucket boundary.
        if promql.starts_with("analytics_latency_seconds_bucket") {
            let bounds: Vec<&str> = samples.iter().filter_map(|s| s["metric"]["le"].as_str()).collect();
            assert!(
                bounds.iter().any(|le| le.parse::<f64>().is_ok_and(|b| (b - 0.1).abs() < 1e-9))
                    && bounds.contains(&"+Inf"),
                "{}",
                context(&format!("analytics_latency_seconds has no le=0.1 or +Inf bucket: {bounds:?}"))
            );
        }
    }

    // The alert rules load and every one evaluates on the real series without error.
    let rules = common::eventually("every alert rule evaluated", Duration::from_secs(30), || async {
        let reply: Json =
            client.get(format!("{}/api/v1/rules", prometheus.base)).send().await.ok()?.json().await.ok()?;
        let rules: Vec<Json> = reply["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.len() == ALERTS.len()
            && rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        evaluated.then_some(rules)
    })
    .await;
    for rule in &rules {
        assert_eq!(
            rule["health"],
            "ok",
            "{}",
            context(&format!("rule {} does not evaluate: {}", rule["name"], rule["lastError"]))
        );
    }
    // A healthy service with no camera raises nothing, not even a pending alert.
    let raised: Vec<&Json> = rules.iter().filter(|r| r["state"] != "inactive").collect();
    assert!(raised.is_empty(), "{}", context(&format!("alerts raised on an idle service: {raised:?}")));
}

/// Every metric the rules and the dashboard use is one the service registers (a rule on a renamed
/// metric would never fire, silently). The names are the constants of src/metrics.rs: families
/// with labels appear on /metrics only once they have a series (a camera, a device), so the
/// scrape above cannot tell.
#[test]
fn alerts_and_dashboard_use_the_services_metric_names() {
    let source = read(&root().join("src/metrics.rs"));
    let registered: BTreeSet<&str> = source
        .lines()
        .filter_map(|l| l.split_once(": &str = \"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name))
        .collect();
    assert!(
        registered.contains("analytics_latency_seconds"),
        "no metric names found in src/metrics.rs: {registered:?}"
    );
    let alerts = yaml(&root().join("deploy/prometheus/alerts.yml"));
    let rule_exprs: Vec<String> =
        alert_rules(&alerts).iter().map(|(_, r)| r["expr"].as_str().unwrap().to_string()).collect();
    let dashboard = dashboard_queries();
    let used = metric_names(rule_exprs.iter().map(String::as_str).chain(dashboard.iter().map(|(_, e)| e.as_str())));
    let unknown: Vec<&String> = used.iter().filter(|m| !registered.contains(m.as_str())).collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml or the dashboard use metrics src/metrics.rs does not register: {unknown:?} \
         (registered: {registered:?})"
    );
}
