//! The deployment artefacts checked against the binary they run. No container engine runs on
//! our machines, so `deploy/compose.yaml`, `deploy/k8s/*.yaml` and `deploy/Dockerfile` are
//! never started here; instead they are parsed and held to the facts they depend on: every
//! flag and environment variable given to `switchyard` is one its subcommand accepts (read
//! from the clap definitions), ports agree between listeners, probes, services and the
//! image, one image is used everywhere, the NATS configuration mounted is
//! `deploy/nats/nats.conf`, the autoscaler watches the stream and consumer the workers use, and
//! grace periods outlast a worker's shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::CommandFactory;
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(root().join(path)).with_context(|| format!("reading {path}"))
}

/// Every document of a YAML file, as JSON values (empty documents dropped).
fn yaml_documents(path: &str) -> Result<Vec<Value>> {
    let text = read(path)?;
    let mut docs = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).with_context(|| format!("{path}: document {i}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// What `switchyard <path…>` accepts: long flags (with whether each takes a value) and
/// environment variables, its own and the global ones.
#[derive(Debug, Default)]
struct Accepts {
    flags: BTreeMap<String, bool>,
    env: BTreeSet<String>,
    subcommands: BTreeSet<String>,
}

fn accepts(path: &[&str]) -> Result<Accepts> {
    let mut command = engine::cli::Cli::command();
    command.build();
    let mut out = Accepts::default();
    let mut current = &command;
    let collect = |cmd: &clap::Command, out: &mut Accepts, globals_only: bool| {
        for arg in cmd.get_arguments() {
            if globals_only && !arg.is_global_set() {
                continue;
            }
            if let Some(long) = arg.get_long() {
                out.flags
                    .insert(format!("--{long}"), arg.get_action().takes_values());
            }
            if let Some(env) = arg.get_env() {
                out.env.insert(env.to_string_lossy().into_owned());
            }
        }
    };
    collect(current, &mut out, true);
    for name in path {
        current = current
            .find_subcommand(name)
            .with_context(|| format!("switchyard has no subcommand `{}`", path.join(" ")))?;
        collect(current, &mut out, false);
    }
    out.subcommands = current
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    // Read by the log filter, not by clap.
    out.env.insert("RUST_LOG".to_owned());
    Ok(out)
}

/// One `switchyard` invocation found in a manifest: where, its arguments from the subcommand
/// on, and its environment.
#[derive(Debug)]
struct Invocation {
    place: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

impl Invocation {
    /// The subcommand path (`engine`, `admin bootstrap`), checked against the binary.
    fn subcommand(&self) -> Result<(Vec<&str>, Accepts, &[String])> {
        let mut path: Vec<&str> = Vec::new();
        let mut rest = self.args.as_slice();
        loop {
            let here = accepts(&path)?;
            match rest.first() {
                Some(next) if here.subcommands.contains(next.as_str()) => {
                    path.push(next.as_str());
                    rest = &rest[1..];
                }
                _ if path.is_empty() => {
                    bail!(
                        "{}: `switchyard {:?}` names no subcommand",
                        self.place,
                        self.args
                    )
                }
                _ => return Ok((path, here, rest)),
            }
        }
    }

    /// Problems with the flags and environment given; empty when the binary accepts them all.
    fn problems(&self) -> Result<Vec<String>> {
        let (path, accepted, mut rest) = self.subcommand()?;
        let mut problems = Vec::new();
        while let Some(arg) = rest.first() {
            rest = &rest[1..];
            let Some(flag) = arg.strip_prefix("--") else {
                problems.push(format!("{}: unexpected argument `{arg}`", self.place));
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, _)) => (format!("--{name}"), true),
                None => (arg.clone(), false),
            };
            match accepted.flags.get(&name) {
                None => problems.push(format!(
                    "{}: `switchyard {}` has no flag {name}",
                    self.place,
                    path.join(" ")
                )),
                Some(true) if !inline => {
                    if rest.is_empty() {
                        problems.push(format!("{}: {name} needs a value", self.place));
                    }
                    rest = rest.get(1..).unwrap_or_default();
                }
                Some(_) => {}
            }
        }
        for name in self.env.keys() {
            if !accepted.env.contains(name) {
                problems.push(format!(
                    "{}: `switchyard {}` reads no environment variable {name}",
                    self.place,
                    path.join(" ")
                ));
            }
        }
        Ok(problems)
    }

    fn flag(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The port of a `host:port` listen address.
fn port_of(addr: &str) -> Result<u16> {
    let addr: std::net::SocketAddr = addr.parse().with_context(|| format!("`{addr}`"))?;
    ensure!(
        addr.ip().is_unspecified(),
        "`{addr}`: a container must listen on every interface, not {}",
        addr.ip()
    );
    Ok(addr.port())
}

// --- compose -----------------------------------------------------------------------------------

fn compose() -> Result<Value> {
    let docs = yaml_documents("deploy/compose.yaml")?;
    ensure!(docs.len() == 1, "compose.yaml is one document");
    Ok(docs.into_iter().next().unwrap_or_default())
}

fn compose_services(compose: &Value) -> Result<&serde_json::Map<String, Value>> {
    compose["services"]
        .as_object()
        .context("compose.yaml has services")
}

/// The `switchyard` invocations of compose services: the command itself, or the one inside a
/// shell entrypoint.
fn compose_invocations(compose: &Value) -> Result<Vec<(String, Invocation)>> {
    let mut out = Vec::new();
    for (name, service) in compose_services(compose)? {
        if !scalar(&service["image"]).starts_with("switchyard") {
            continue;
        }
        let env: BTreeMap<String, String> = service["environment"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
            .unwrap_or_default();
        let command = strings(&service["command"]);
        let entrypoint = strings(&service["entrypoint"]);
        let args = if entrypoint.first().is_some_and(|e| e.ends_with("sh")) {
            // A shell line: the words after `switchyard`, up to the first shell operator.
            let line = command.join(" ");
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| *w == "switchyard")
                .with_context(|| format!("compose service {name}: its shell runs no switchyard"))?;
            words[at + 1..]
                .iter()
                .take_while(|w| !matches!(**w, ">" | "&&" | "||" | ";" | "|" | "}"))
                .map(|w| (*w).to_owned())
                .collect()
        } else {
            ensure!(
                entrypoint.is_empty(),
                "compose service {name}: unexpected entrypoint"
            );
            command
        };
        out.push((
            name.clone(),
            Invocation {
                place: format!("compose.yaml services.{name}"),
                args,
                env,
            },
        ));
    }
    Ok(out)
}

/// A compose duration (`60s`, `1m30s`) in seconds.
fn compose_seconds(value: &Value) -> Result<u64> {
    let text = scalar(value);
    let parsed: schemas::duration::Duration =
        text.parse().map_err(|e| anyhow::anyhow!("`{text}`: {e}"))?;
    Ok(parsed.get().as_secs())
}

#[test]
fn compose_runs_only_flags_and_variables_the_binary_accepts() -> Result<()> {
    let compose = compose()?;
    let invocations = compose_invocations(&compose)?;
    let mut problems = Vec::new();
    for (_, invocation) in &invocations {
        problems.extend(invocation.problems()?);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let kinds: Vec<String> = invocations
        .iter()
        .map(|(_, i)| i.args.first().cloned().unwrap_or_default())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "engine").count() >= 2,
        "two engines: {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "worker"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "admin"), "a bootstrap: {kinds:?}");
    Ok(())
}

#[test]
fn compose_ports_health_checks_and_grace_periods_agree_with_the_processes() -> Result<()> {
    let compose = compose()?;
    let services = compose_services(&compose)?;
    for (name, invocation) in compose_invocations(&compose)? {
        let service = &services[&name];
        let health = strings(&service["healthcheck"]["test"]).join(" ");
        match invocation.args[0].as_str() {
            "engine" => {
                let port = port_of(&invocation.env["SWITCHYARD_LISTEN"])?;
                assert!(
                    health.contains(&format!("/dev/tcp/127.0.0.1/{port}"))
                        && health.contains("/readyz"),
                    "{name}: health check on the engine's {port}: {health}"
                );
                let published = strings(&service["ports"]);
                assert!(
                    published.iter().all(|p| p.ends_with(&format!(":{port}"))),
                    "{name}: published ports {published:?} map to {port}"
                );
                assert_eq!(invocation.env["SWITCHYARD_STREAM_REPLICAS"], "3", "{name}");
                assert!(
                    invocation
                        .env
                        .get("SWITCHYARD_MASTER_KEY_FILE")
                        .is_some_and(|f| f.starts_with("/run/secrets/")),
                    "{name}: the master key comes from a compose secret"
                );
                let needs = service["depends_on"].as_object().context("depends_on")?;
                for other in ["nats-0", "nats-1", "nats-2", "postgres"] {
                    assert_eq!(
                        needs.get(other).map(|d| scalar(&d["condition"])).as_deref(),
                        Some("service_healthy"),
                        "{name} waits for {other}"
                    );
                }
            }
            "worker" => {
                let port = port_of(&invocation.env["SWITCHYARD_METRICS_ADDR"])?;
                assert!(
                    health.contains(&format!("/dev/tcp/127.0.0.1/{port}")),
                    "{name}: health check on the metrics port {port}: {health}"
                );
                assert!(
                    service.get("ports").is_none() && service.get("container_name").is_none(),
                    "{name}: scalable with --scale, so no fixed host port or container name"
                );
                let grace = compose_seconds(&service["stop_grace_period"])?;
                check_worker_grace(&invocation, grace, &name)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn compose_mounts_the_nats_configuration_and_sets_every_variable_it_reads() -> Result<()> {
    let compose = compose()?;
    let services = compose_services(&compose)?;
    let variables = nats_conf_variables()?;
    let mut nodes = 0;
    for (name, service) in services {
        let image = scalar(&service["image"]);
        if !image.starts_with("nats:") {
            continue;
        }
        nodes += 1;
        check_nats_image(&image)?;
        let command = strings(&service["command"]);
        let config = command
            .iter()
            .position(|a| a == "--config" || a == "-c")
            .and_then(|i| command.get(i + 1))
            .with_context(|| format!("{name}: --config"))?;
        let volumes = strings(&service["volumes"]);
        let mount = volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(config.as_str()))
            .with_context(|| format!("{name}: nothing mounted at {config}"))?;
        let source = mount.split(':').next().unwrap_or_default();
        assert_eq!(
            root().join("deploy").join(source).canonicalize()?,
            root().join("deploy/nats/nats.conf").canonicalize()?,
            "{name} mounts deploy/nats/nats.conf"
        );
        let env = service["environment"].as_object().context("environment")?;
        for variable in &variables {
            assert!(env.contains_key(variable), "{name} sets {variable}");
        }
        assert_eq!(scalar(&env["NATS_SERVER_NAME"]), *name, "server name");
        let port = scalar(&env["NATS_MONITOR_PORT"]);
        let health = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            health.contains(&format!(":{port}/healthz")),
            "{name}: health check on the monitoring port: {health}"
        );
    }
    assert_eq!(nodes, 3, "three NATS nodes");
    let client_port = nats_port(services, "NATS_CLIENT_PORT")?;
    for (name, invocation) in compose_invocations(&compose)? {
        if let Some(url) = invocation.env.get("NATS_URL") {
            check_nats_urls(url, &["nats-0", "nats-1", "nats-2"], &client_port, &name)?;
        }
    }
    Ok(())
}

fn nats_port(services: &serde_json::Map<String, Value>, variable: &str) -> Result<String> {
    let ports: BTreeSet<String> = services
        .values()
        .filter(|s| scalar(&s["image"]).starts_with("nats:"))
        .map(|s| scalar(&s["environment"][variable]))
        .collect();
    ensure!(ports.len() == 1, "one {variable} on every node: {ports:?}");
    Ok(ports.into_iter().next().unwrap_or_default())
}

// --- Kubernetes ----------------------------------------------------------------------------

/// Every resource of `deploy/k8s`, with the file it came from, and the kustomization.
fn k8s() -> Result<(Vec<(String, Value)>, Value)> {
    let dir = root().join("deploy/k8s");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    let mut kustomization = Value::Null;
    for file in &files {
        for doc in yaml_documents(&format!("deploy/k8s/{file}"))? {
            if doc["kind"] == "Kustomization" {
                kustomization = doc;
            } else {
                ensure!(
                    doc["metadata"].get("namespace").is_none(),
                    "{file}: resources carry no namespace (kustomization.yaml sets it)"
                );
                resources.push((file.clone(), doc));
            }
        }
    }
    ensure!(
        !kustomization.is_null(),
        "deploy/k8s has a kustomization.yaml"
    );
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = files
        .into_iter()
        .filter(|f| !f.starts_with("kustomization"))
        .collect();
    ensure!(
        listed == present,
        "kustomization.yaml lists {listed:?}, the directory holds {present:?}"
    );
    Ok((resources, kustomization))
}

fn find<'a>(resources: &'a [(String, Value)], kind: &str, name: &str) -> Result<&'a Value> {
    resources
        .iter()
        .map(|(_, r)| r)
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))
}

fn workloads(resources: &[(String, Value)]) -> impl Iterator<Item = &Value> {
    resources
        .iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r["kind"].as_str(), Some("Deployment" | "StatefulSet")))
}

fn containers(workload: &Value) -> Vec<&Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

/// A container's environment, values only (references to secrets map to an empty string).
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| (scalar(&e["name"]), scalar(&e["value"])))
                .collect()
        })
        .unwrap_or_default()
}

/// A probe's or service's port, resolving a container port's name.
fn resolve_port(container: &Value, port: &Value) -> Result<u16> {
    if let Some(n) = port.as_u64() {
        return Ok(u16::try_from(n)?);
    }
    let name = scalar(port);
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name.as_str()))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("no container port named {name}"))
}

fn k8s_invocation(file: &str, workload: &Value, container: &Value) -> Invocation {
    let mut args = strings(&container["command"]);
    if args.first().is_some_and(|c| c.ends_with("switchyard")) {
        args.remove(0);
    }
    args.extend(strings(&container["args"]));
    Invocation {
        place: format!(
            "{file} {} {}",
            scalar(&workload["metadata"]["name"]),
            scalar(&container["name"])
        ),
        args,
        env: container_env(container),
    }
}

fn switchyard_containers(resources: &[(String, Value)]) -> Vec<(String, &Value, &Value)> {
    let mut out = Vec::new();
    for (file, resource) in resources {
        if !matches!(
            resource["kind"].as_str(),
            Some("Deployment" | "StatefulSet")
        ) {
            continue;
        }
        for container in containers(resource) {
            if scalar(&container["image"]).starts_with("switchyard") {
                out.push((file.clone(), resource, container));
            }
        }
    }
    out
}

#[test]
fn kubernetes_runs_only_flags_and_variables_the_binary_accepts() -> Result<()> {
    let (resources, _) = k8s()?;
    let mut problems = Vec::new();
    let mut kinds = Vec::new();
    for (file, workload, container) in switchyard_containers(&resources) {
        let invocation = k8s_invocation(&file, workload, container);
        problems.extend(invocation.problems()?);
        kinds.push(invocation.args.first().cloned().unwrap_or_default());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    kinds.sort();
    assert_eq!(kinds, ["engine", "worker"]);
    Ok(())
}

#[test]
fn kubernetes_probes_services_and_scrape_ports_match_the_listeners() -> Result<()> {
    let (resources, _) = k8s()?;
    for (file, workload, container) in switchyard_containers(&resources) {
        let invocation = k8s_invocation(&file, workload, container);
        let place = &invocation.place;
        let (variable, name) = match invocation.args[0].as_str() {
            "engine" => ("SWITCHYARD_LISTEN", "http"),
            "worker" => ("SWITCHYARD_METRICS_ADDR", "metrics"),
            other => bail!("{place}: unexpected subcommand {other}"),
        };
        let port = port_of(
            invocation
                .env
                .get(variable)
                .with_context(|| format!("{place}: {variable}"))?,
        )?;
        assert_eq!(
            resolve_port(container, &Value::String(name.to_owned()))?,
            port,
            "{place}: containerPort {name}"
        );
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{place}: {probe}");
            assert_eq!(
                resolve_port(container, &get["port"])?,
                port,
                "{place}: {probe}"
            );
        }
        let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            scalar(&annotations["prometheus.io/port"]),
            port.to_string(),
            "{place}: scrape port"
        );
        assert_eq!(scalar(&annotations["prometheus.io/path"]), "/metrics");
        let security = &workload["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{place}");
        assert!(
            security["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{place}: a numeric non-root user"
        );
        assert_eq!(
            invocation
                .env
                .get("SWITCHYARD_LOG_FORMAT")
                .map(String::as_str),
            Some("json"),
            "{place}: JSON logs in production"
        );
    }
    // Every Service reaches a port some selected container has.
    for (file, service) in resources.iter().filter(|(_, r)| r["kind"] == "Service") {
        let selected = selected_workloads(&resources, &service["spec"]["selector"]);
        ensure!(
            !selected.is_empty(),
            "{file}: Service {} selects nothing",
            service["metadata"]["name"]
        );
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            for workload in &selected {
                let container = containers(workload)[0];
                resolve_port(container, &port["targetPort"]).with_context(|| {
                    format!("{file}: Service {} port", service["metadata"]["name"])
                })?;
            }
        }
    }
    Ok(())
}

/// The workloads whose pod labels include every label of `selector`.
fn selected_workloads<'a>(resources: &'a [(String, Value)], selector: &Value) -> Vec<&'a Value> {
    let Some(wanted) = selector.as_object() else {
        return Vec::new();
    };
    workloads(resources)
        .filter(|w| {
            let labels = &w["spec"]["template"]["metadata"]["labels"];
            wanted.iter().all(|(k, v)| labels[k] == *v)
        })
        .collect()
}

#[test]
fn kubernetes_engines_are_redundant_and_every_budget_guards_a_workload() -> Result<()> {
    let (resources, _) = k8s()?;
    let engine = find(&resources, "Deployment", "switchyard-engine")?;
    assert!(
        engine["spec"]["replicas"].as_u64().is_some_and(|r| r >= 2),
        "at least two engines"
    );
    let engine_env = container_env(containers(engine)[0]);
    assert_eq!(engine_env["SWITCHYARD_STREAM_REPLICAS"], "3");
    let nats = find(&resources, "StatefulSet", "nats")?;
    assert_eq!(
        nats["spec"]["replicas"], 3,
        "three NATS nodes for three replicas"
    );

    let mut guarded = BTreeSet::new();
    for (file, pdb) in resources
        .iter()
        .filter(|(_, r)| r["kind"] == "PodDisruptionBudget")
    {
        let selected = selected_workloads(&resources, &pdb["spec"]["selector"]["matchLabels"]);
        ensure!(
            selected.len() == 1,
            "{file}: PodDisruptionBudget {} selects {} workloads",
            pdb["metadata"]["name"],
            selected.len()
        );
        guarded.insert(scalar(&selected[0]["metadata"]["name"]));
    }
    let all: BTreeSet<String> = workloads(&resources)
        .map(|w| scalar(&w["metadata"]["name"]))
        .collect();
    assert_eq!(guarded, all, "a PodDisruptionBudget for every workload");
    Ok(())
}

#[test]
fn kubernetes_nats_runs_the_same_configuration_file() -> Result<()> {
    let (resources, kustomization) = k8s()?;
    let conf = read("deploy/nats/nats.conf")?;
    let nats = find(&resources, "StatefulSet", "nats")?;
    let container = containers(nats)[0];
    check_nats_image(&scalar(&container["image"]))?;
    let args = strings(&container["args"]);
    let config = args
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .and_then(|i| args.get(i + 1))
        .context("nats --config")?;
    let (dir, file) = config.rsplit_once('/').context("config path")?;
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == dir))
        .context("the config directory is mounted")?;
    let volume = nats["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .context("its volume")?;
    let map = find(
        &resources,
        "ConfigMap",
        &scalar(&volume["configMap"]["name"]),
    )?;
    assert!(
        scalar(&map["data"][file]) == conf,
        "the ConfigMap's {file} differs from deploy/nats/nats.conf: copy the file into it"
    );
    let env = container["env"].as_array().context("env")?;
    for variable in nats_conf_variables()? {
        assert!(
            env.iter().any(|e| e["name"] == variable.as_str()),
            "the StatefulSet sets {variable}"
        );
    }
    // Clients name every node by its stable DNS name on the headless Service.
    let service = find(&resources, "Service", &scalar(&nats["spec"]["serviceName"]))?;
    assert_eq!(scalar(&service["spec"]["clusterIP"]), "None", "headless");
    let client_port = env
        .iter()
        .find(|e| e["name"] == "NATS_CLIENT_PORT")
        .map(|e| scalar(&e["value"]))
        .unwrap_or_default();
    let hosts: Vec<String> = (0..3)
        .map(|i| format!("nats-{i}.{}", scalar(&service["metadata"]["name"])))
        .collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    for (file, workload, container) in switchyard_containers(&resources) {
        let env = container_env(container);
        let url = env.get("NATS_URL").context("NATS_URL")?;
        check_nats_urls(
            url,
            &hosts,
            &client_port,
            &format!("{file} {}", workload["metadata"]["name"]),
        )?;
    }
    assert!(kustomization["namespace"].is_string());
    Ok(())
}

#[test]
fn kubernetes_autoscaling_follows_the_workers_consumer() -> Result<()> {
    let (resources, kustomization) = k8s()?;
    let scaled = resources
        .iter()
        .map(|(_, r)| r)
        .find(|r| r["kind"] == "ScaledObject")
        .context("a KEDA ScaledObject")?;
    let target = scalar(&scaled["spec"]["scaleTargetRef"]["name"]);
    let worker = find(&resources, "Deployment", &target)?;
    let invocation = k8s_invocation("worker", worker, containers(worker)[0]);
    assert_eq!(invocation.args[0], "worker", "it scales the workers");
    assert_eq!(scaled["spec"]["minReplicaCount"], 0, "from zero");
    assert!(
        scaled["spec"]["maxReplicaCount"]
            .as_u64()
            .is_some_and(|n| n > 1)
    );

    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "nats-jetstream");
    let meta = &trigger["metadata"];
    assert_eq!(meta["stream"], schemas::transport::STEPS_STREAM);
    // The workers serve the default queue only (no --queue), whose consumer this is.
    assert_eq!(invocation.flag("--queue"), None);
    assert_eq!(
        scalar(&meta["consumer"]),
        schemas::transport::worker_consumer(schemas::transport::DEFAULT_QUEUE)
    );
    assert_eq!(meta["account"], "$G", "nats.conf defines no accounts");
    assert!(scalar(&meta["lagThreshold"]).parse::<u64>()? > 0);
    let nats = find(&resources, "StatefulSet", "nats")?;
    let monitor = containers(nats)[0]["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "monitor"))
        .map(|p| p["containerPort"].clone())
        .context("NATS monitor port")?;
    assert_eq!(
        scalar(&meta["natsServerMonitoringEndpoint"]),
        format!(
            "{}.{}.svc.cluster.local:{monitor}",
            scalar(&nats["spec"]["serviceName"]),
            scalar(&kustomization["namespace"])
        ),
        "the headless Service's monitoring port, in the kustomization's namespace"
    );
    // The scaler asks the leader at `<server_name>.<host>`: servers are named after pods.
    let name_from = &containers(nats)[0]["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "NATS_SERVER_NAME"))
        .context("NATS_SERVER_NAME")?["valueFrom"]["fieldRef"]["fieldPath"];
    assert_eq!(name_from, "metadata.name");

    let grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .context("the worker's terminationGracePeriodSeconds")?;
    check_worker_grace(&invocation, grace, "worker Deployment")?;
    Ok(())
}

/// The grace period a supervisor gives a stopping worker must outlast its whole shutdown
/// and its heartbeat and ack wait.
fn check_worker_grace(worker: &Invocation, grace_seconds: u64, place: &str) -> Result<()> {
    let duration = |flag: &str, default: Duration| -> Result<Duration> {
        match worker.flag(flag) {
            None => Ok(default),
            Some(text) => Ok(text
                .parse::<schemas::duration::Duration>()
                .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))?
                .get()),
        }
    };
    let defaults = workers::WorkerConfig::default();
    let heartbeat = duration("--heartbeat", defaults.heartbeat)?;
    let ack_wait = duration("--ack-wait", defaults.ack_wait)?;
    let grace = Duration::from_secs(grace_seconds);
    for (what, bound) in [
        ("a worker's longest shutdown", defaults.longest_shutdown()),
        ("the heartbeat", heartbeat),
        ("the ack wait", ack_wait),
    ] {
        ensure!(
            grace > bound,
            "{place}: grace period {grace:?} is not longer than {what} ({bound:?})"
        );
    }
    Ok(())
}

// --- NATS ----------------------------------------------------------------------------------

/// The `$NATS_…` variables deploy/nats/nats.conf reads.
fn nats_conf_variables() -> Result<BTreeSet<String>> {
    let conf = read("deploy/nats/nats.conf")?;
    let vars: BTreeSet<String> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split('$').skip(1))
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
        .collect();
    ensure!(vars.contains("NATS_SERVER_NAME"), "{vars:?}");
    Ok(vars)
}

/// The official image, at 2.10 or later (`sync_interval`).
fn check_nats_image(image: &str) -> Result<()> {
    let tag = image
        .strip_prefix("nats:")
        .context("the official nats image")?;
    let mut parts = tag.split(['.', '-']);
    let major: u32 = parts.next().unwrap_or_default().parse()?;
    let minor: u32 = parts.next().unwrap_or_default().parse()?;
    ensure!(
        (major, minor) >= (2, 10),
        "{image}: nats.conf needs nats-server 2.10 or later"
    );
    Ok(())
}

fn check_nats_urls(url: &str, hosts: &[&str], port: &str, place: &str) -> Result<()> {
    let expected: Vec<String> = hosts.iter().map(|h| format!("nats://{h}:{port}")).collect();
    let given: Vec<&str> = url.split(',').collect();
    ensure!(
        given == expected,
        "{place}: NATS_URL {url} should name every node: {}",
        expected.join(",")
    );
    Ok(())
}

// --- one image, and the Dockerfile -------------------------------------------------------

#[test]
fn one_image_is_used_everywhere() -> Result<()> {
    let compose = compose()?;
    let mut images = BTreeSet::new();
    for service in compose_services(&compose)?.values() {
        let image = scalar(&service["image"]);
        if image.starts_with("switchyard") {
            images.insert(image);
        }
    }
    let (resources, _) = k8s()?;
    for (_, _, container) in switchyard_containers(&resources) {
        images.insert(scalar(&container["image"]));
    }
    assert_eq!(images.len(), 1, "{images:?}");
    let image = images.into_iter().next().unwrap_or_default();
    let tag = image.split(':').nth(1).unwrap_or_default();
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the image is tagged with the workspace version"
    );
    let mut nats_images = BTreeSet::new();
    for service in compose_services(&compose)?.values() {
        let image = scalar(&service["image"]);
        if image.starts_with("nats:") {
            nats_images.insert(image);
        }
    }
    let nats = find(&resources, "StatefulSet", "nats")?;
    nats_images.insert(scalar(&containers(nats)[0]["image"]));
    assert_eq!(nats_images.len(), 1, "{nats_images:?}");
    Ok(())
}

/// The `[[bin]]` name of the engine crate.
fn binary_name() -> Result<String> {
    let manifest = read("engine/Cargo.toml")?;
    let after = manifest
        .split("[[bin]]")
        .nth(1)
        .context("engine/Cargo.toml has a [[bin]]")?;
    after
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_owned())
        .context("the [[bin]] name")
}

#[test]
fn the_dockerfile_builds_the_binary_into_a_slim_non_root_image() -> Result<()> {
    let text = read("deploy/Dockerfile")?;
    // Instructions, with continuation lines joined and comments dropped.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (op, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push((op.to_uppercase(), rest.trim().to_owned()));
                pending.clear();
            }
        }
    }
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, rest)| rest)
        .collect();
    ensure!(froms.len() >= 2, "multi-stage: {froms:?}");
    let builder = froms[0];
    let (image, stage) = builder
        .split_once(" AS ")
        .context("the first stage is named")?;
    let version = image
        .strip_prefix("rust:")
        .context("the builder is the official rust image")?;
    let rust_version = read("Cargo.toml")?
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .context("rust-version")?;
    assert!(
        version.starts_with(&rust_version),
        "builder {image} is the workspace's rust-version {rust_version}"
    );
    let runtime = froms
        .last()
        .map(|f| f.split(' ').next().unwrap_or_default());
    assert!(
        runtime.is_some_and(|r| r == "debian:bookworm-slim" || r.starts_with("gcr.io/distroless/")),
        "slim runtime: {runtime:?}"
    );
    assert!(
        image.contains("bookworm"),
        "the builder's glibc is the runtime's: {image}"
    );

    // The dependency layer copies every workspace member's manifest, or the build breaks.
    let workspace = read("Cargo.toml")?;
    let members = workspace
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .context("workspace members")?;
    for member in members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
    {
        assert!(
            instructions
                .iter()
                .any(|(op, rest)| op == "COPY" && rest.starts_with(&format!("{member}/Cargo.toml"))),
            "the dependency layer copies {member}/Cargo.toml"
        );
    }
    let bin = binary_name()?;
    let builds: Vec<&String> = instructions
        .iter()
        .filter(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(builds.len(), 2, "dependencies, then our crates: {builds:?}");
    for build in &builds {
        assert!(build.contains(&format!("--bin {bin}")) && build.contains("--locked"));
    }
    assert!(
        builds[1].contains(&format!("target/release/{bin}")),
        "the built binary is installed"
    );
    let copy = instructions
        .iter()
        .find(|(op, rest)| op == "COPY" && rest.starts_with(&format!("--from={stage}")))
        .map(|(_, rest)| rest)
        .context("the runtime copies from the builder")?;
    assert!(
        copy.ends_with(&format!("/usr/local/bin/{bin}")),
        "{copy}: the binary on PATH under its [[bin]] name"
    );
    let user = instructions
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.split(':').next().unwrap_or_default().to_owned())
        .context("a USER")?;
    assert!(user != "root" && user != "0", "non-root: {user}");
    let entrypoint = instructions
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, e)| e.as_str())
        .context("an ENTRYPOINT")?;
    assert_eq!(entrypoint, format!("[\"{bin}\"]"));

    let exposed: BTreeSet<u16> = instructions
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, ports)| ports.split_whitespace().map(str::parse).collect::<Vec<_>>())
        .collect::<Result<_, _>>()?;
    let (resources, _) = k8s()?;
    let mut used = BTreeSet::new();
    for (file, workload, container) in switchyard_containers(&resources) {
        let invocation = k8s_invocation(&file, workload, container);
        for variable in ["SWITCHYARD_LISTEN", "SWITCHYARD_METRICS_ADDR"] {
            if let Some(addr) = invocation.env.get(variable) {
                used.insert(port_of(addr)?);
            }
        }
    }
    assert_eq!(exposed, used, "EXPOSE the engine's and the worker's ports");
    // The image's default listen address is the one the manifests use.
    let listen = instructions
        .iter()
        .filter(|(op, _)| op == "ENV")
        .find_map(|(_, env)| {
            env.split_whitespace()
                .find_map(|kv| kv.strip_prefix("SWITCHYARD_LISTEN="))
        })
        .context("ENV SWITCHYARD_LISTEN")?;
    assert!(used.contains(&port_of(listen)?));

    let ignore = read(".dockerignore")?;
    for entry in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore keeps {entry} out of the build context"
        );
    }
    Ok(())
}
