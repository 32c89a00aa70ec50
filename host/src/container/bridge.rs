//! The isolated network: each instance in its own network namespace on a
//! bridge berth owns, with egress, and nothing else.
//!
//! # Attaching an instance
//! berth makes the instance's namespace before the container exists
//! ([`super::netns::create_pinned`]: pinned by a bind mount in the
//! instance's directory, so it outlives the process until berth is done
//! with it; the runtime spec names it and runc joins it), and runs the
//! standard CNI plugins on it, as containerd's CRI does for a pod sandbox:
//! `bridge` (a veth pair, the host end on the bridge, the bridge the
//! instance's gateway) with `host-local` IPAM (leases under berth's own
//! state directory); egress is masqueraded by berth's one NAT chain per
//! bridge (below). The host end of the veth is then
//! made an *isolated* bridge port (`brport/isolated`): isolated ports
//! forward only to the bridge itself, never to each other, so instances
//! cannot reach one another at layer 2, whatever the host's `br_netfilter`
//! setting. When the instance stops, berth runs the plugins' `DEL` on the
//! still-pinned namespace (releasing the address), then unmounts it.
//!
//! # What berth adds to the host's firewall
//! Two filter chains per bridge, jumped to first from `INPUT` and `FORWARD`
//! (iptables, and ip6tables for IPv6), one for the instances'
//! `allowed_networks`, and one NAT chain, installed before the first
//! instance is attached and removed with the bridge when the shim closes (a
//! crashed run's are removed when the next one opens):
//!
//! ```text
//! BERTH-<bridge>-IN:    -i <bridge> ESTABLISHED,RELATED → ACCEPT  (answers to berth's proxy)
//!                       -i <bridge> → DROP                        (no port of the host, any address)
//! BERTH-<bridge>-FWD:   -o <bridge> ESTABLISHED,RELATED → ACCEPT  (answers to the instances' egress)
//!                       -o <bridge> → DROP                        (nothing else in)
//!                       -i <bridge> -o <bridge> → DROP            (no instance to instance, with br_netfilter)
//!                       -i <bridge> → BERTH-<bridge>-ALLOW        (each app's allowed_networks)
//!                       -i <bridge> -d <resolver> udp/tcp 53 → ACCEPT  (the resolvers of the instances' resolv.conf)
//!                       -i <bridge> -d <range> → DROP             (each IPv4 range of berth_wasm's REFUSED table:
//!                                                                 private, CGNAT, link-local/metadata, loopback…)
//!                       -i <bridge> → ACCEPT                      (egress: the public internet)
//! BERTH-<bridge>-ALLOW: -i <bridge> -s <instance>/32 -d <network> → ACCEPT  (added at attach, removed at detach)
//! ```
//!
//! (ip6tables: the same `IN`; `FWD` drops everything from the bridge, as
//! instances have no IPv6 address.) The host's own addresses, whatever
//! their range, are behind `IN`: a packet to any of them is the host's
//! input, never forwarded, so no `allowed_networks` entry opens them. An
//! instance of an app without `allowed_networks` costs no iptables run;
//! one with N networks costs N at attach and N at detach.
//!
//! and, in the `nat` table, one chain for the whole bridge (where the
//! `bridge` plugin's `ipMasq` would add a chain per instance, three or four
//! iptables runs on every attach and again on every detach):
//!
//! ```text
//! POSTROUTING → BERTH-<bridge>-NAT:  ! -s <subnet> → RETURN
//!                                    -d <subnet> → RETURN
//!                                    -d 224.0.0.0/4 → RETURN
//!                                    → MASQUERADE               (egress through the host's address)
//! ```
//!
//! berth's proxy and probes connect from the host to the instance's address
//! (no namespace to enter); the instance sees the world through NAT.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use berth_wasm::networks::{Network, REFUSED, is_internal};

use super::error::{ContainerError, Result};

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The default bridge.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The default subnet: private, and not one Docker (172.17/16), Podman
/// (10.88/16), Kubernetes' usual pod and service ranges or a home router
/// tends to use.
pub const DEFAULT_SUBNET: &str = "10.213.0.0/16";
/// How long one plugin run may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The interface name inside the instance.
const IFNAME: &str = "eth0";

/// How the isolated network is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    /// The bridge device (at most 15 characters).
    pub bridge: String,
    /// The instances' IPv4 subnet, `a.b.c.d/len`.
    pub subnet: String,
    /// Where the CNI plugins are.
    pub plugin_dir: PathBuf,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.into(),
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
        }
    }
}

impl BridgeOptions {
    /// Checks the bridge name and the subnet.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(format!(
                "`{b}` is not a bridge name: 1-15 of A-Z, a-z, 0-9, '-', '_'"
            ));
        }
        let (addr, len) = parse_subnet(&self.subnet)?;
        let [a, b, ..] = addr.octets();
        let shared = a == 100 && (64..128).contains(&b);
        if !(addr.is_private() || shared) {
            return Err(format!(
                "`{}` is not a private subnet (10/8, 172.16/12, 192.168/16 or 100.64/10)",
                self.subnet
            ));
        }
        if !(8..=28).contains(&len) {
            return Err(format!(
                "`{}`: the prefix length must be from 8 to 28",
                self.subnet
            ));
        }
        Ok(())
    }
}

fn parse_subnet(s: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let bad = || format!("`{s}` is not an IPv4 subnet like 10.213.0.0/16");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 || u32::from(addr) & !(u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)) != 0
    {
        return Err(bad());
    }
    Ok((addr, len))
}

/// The bridge network of one shim.
#[derive(Debug)]
pub struct BridgeNetwork {
    options: BridgeOptions,
    /// The plugin configuration (CNI 1.0.0).
    config: Vec<u8>,
    /// Whether berth's firewall chains are in place: installed at the first
    /// attach, so a host without isolated instances changes nothing.
    installed: tokio::sync::Mutex<bool>,
    /// The `ALLOW` chain's rules of each attached instance that has
    /// `allowed_networks`, by instance id (removed at detach).
    allowances: std::sync::Mutex<HashMap<String, Vec<Vec<String>>>>,
}

fn net_err(context: impl Into<String>) -> ContainerError {
    ContainerError::Network(context.into())
}

impl BridgeNetwork {
    /// Checks that the plugins are there and removes whatever a crashed run
    /// left of berth's firewall chains for the bridge. Leases are kept under
    /// `state_dir`. The chains are installed at the first attach.
    ///
    /// # Errors
    /// Missing plugins.
    pub async fn open(state_dir: &Path, options: BridgeOptions) -> Result<Self> {
        options.validate().map_err(net_err)?;
        for plugin in ["bridge", "host-local"] {
            let p = options.plugin_dir.join(plugin);
            if !p.is_file() {
                return Err(net_err(format!(
                    "the CNI plugin `{}` is missing (install Debian's containernetworking-plugins)",
                    p.display()
                )));
            }
        }
        let ipam_dir = state_dir.join("cni");
        std::fs::create_dir_all(&ipam_dir)
            .map_err(|e| net_err(format!("creating {}: {e}", ipam_dir.display())))?;
        let config = serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": format!("berth-{}", options.bridge),
            "type": "bridge",
            "bridge": options.bridge,
            "isGateway": true,
            // One masquerade rule per bridge (berth's NAT chain, below)
            // instead of the plugin's chain per instance: that one costs
            // iptables runs on every attach and detach.
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": options.subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": ipam_dir,
            },
        }))
        .map_err(|e| net_err(e.to_string()))?;
        let net = Self {
            options,
            config,
            installed: tokio::sync::Mutex::new(false),
            allowances: std::sync::Mutex::default(),
        };
        net.remove_rules().await;
        Ok(net)
    }

    /// The bridge device.
    pub fn bridge(&self) -> &str {
        &self.options.bridge
    }

    /// Attaches the namespace pinned at `netns` (instance `id`) to the
    /// bridge, its egress open to `allowed` (IPv4 networks in refused
    /// ranges) besides the public internet; returns its address.
    ///
    /// # Errors
    /// A plugin failure (its message quoted), an answer without an
    /// IPv4 address, or a firewall rule that would not go in.
    pub async fn attach(&self, id: &str, netns: &Path, allowed: &[Network]) -> Result<Ipv4Addr> {
        {
            let mut installed = self.installed.lock().await;
            if !*installed {
                self.install_rules().await?;
                *installed = true;
            }
        }
        let out = self.plugin("ADD", id, netns).await?;
        let result: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| net_err(format!("the bridge plugin answered with bad JSON: {e}")))?;
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| net_err(format!("the bridge plugin gave no IPv4 address: {result}")))?;
        // The host end of the veth: an interface outside any sandbox that is
        // not the bridge itself.
        let veth = result["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
            .filter_map(|i| i["name"].as_str())
            .find(|n| *n != self.options.bridge)
            .map(str::to_owned);
        let Some(veth) = veth else {
            let _ = self.detach(id, netns).await;
            return Err(net_err(format!(
                "the bridge plugin named no host interface: {result}"
            )));
        };
        let isolate = || -> std::io::Result<()> {
            std::fs::write(format!("/sys/class/net/{veth}/brport/isolated"), "1")?;
            // The bridge gets no IPv6 address: the host is not reachable
            // over IPv6 link-local either.
            std::fs::write(
                format!(
                    "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
                    self.options.bridge
                ),
                "1",
            )
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        if let Err(e) = isolate() {
            let _ = self.detach(id, netns).await;
            return Err(net_err(format!("isolating bridge port {veth}: {e}")));
        }
        if let Err(e) = self.allow(id, ip, allowed).await {
            let _ = self.detach(id, netns).await;
            return Err(e);
        }
        Ok(ip)
    }

    /// Opens egress from `ip` (instance `id`) to `allowed`: one rule each
    /// in the `ALLOW` chain, recorded for [`BridgeNetwork::detach`].
    async fn allow(&self, id: &str, ip: Ipv4Addr, allowed: &[Network]) -> Result<()> {
        if allowed.is_empty() {
            return Ok(());
        }
        let chain = self.allow_chain();
        let source = format!("{ip}/32");
        let mut added = Vec::with_capacity(allowed.len());
        for net in allowed {
            let rule = vec![
                chain.clone(),
                "-i".into(),
                self.options.bridge.clone(),
                "-s".into(),
                source.clone(),
                "-d".into(),
                net.to_string(),
                "-j".into(),
                "ACCEPT".into(),
            ];
            let mut args = vec!["-A"];
            args.extend(rule.iter().map(String::as_str));
            let failed = run("iptables", &args)
                .await
                .err()
                .map(|e| format!("iptables {}: {e}", args.join(" ")));
            if failed.is_none() {
                added.push(rule);
            }
            // Recorded at once: detach (also after a failure below) removes
            // what went in.
            self.allowances
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_owned(), added.clone());
            if let Some(e) = failed {
                return Err(net_err(format!("cannot open egress to {net} ({e})")));
            }
        }
        Ok(())
    }

    /// Detaches instance `id` (its namespace still pinned at `netns`):
    /// releases its address. Idempotent.
    ///
    /// # Errors
    /// A plugin failure.
    pub async fn detach(&self, id: &str, netns: &Path) -> Result<()> {
        let opened = self
            .allowances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        for rule in opened.into_iter().flatten() {
            let mut args = vec!["-D"];
            args.extend(rule.iter().map(String::as_str));
            if let Err(e) = run("iptables", &args).await {
                tracing::warn!(%id, error = %e, "removing an allowed_networks rule");
            }
        }
        self.plugin("DEL", id, netns).await.map(|_| ())
    }

    /// Removes berth's firewall chains and the bridge. Call it when the
    /// shim closes, after every instance has stopped.
    pub async fn close(&self) {
        let mut installed = self.installed.lock().await;
        // Also when this run attached nothing: a crashed run's bridge and
        // chains go too.
        self.remove_rules().await;
        if Path::new("/sys/class/net")
            .join(&self.options.bridge)
            .exists()
        {
            let _ = run("ip", &["link", "delete", "dev", &self.options.bridge]).await;
        }
        *installed = false;
    }

    async fn plugin(&self, command: &str, id: &str, netns: &Path) -> Result<Vec<u8>> {
        let binary = self.options.plugin_dir.join("bridge");
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.options.plugin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| net_err(format!("running {}: {e}", binary.display())))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&self.config)
            .await
            .map_err(|e| net_err(format!("feeding the bridge plugin: {e}")))?;
        drop(stdin);
        let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                net_err(format!(
                    "the bridge plugin ({command}) took over {PLUGIN_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| net_err(format!("the bridge plugin ({command}): {e}")))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        // CNI errors are JSON on stdout: {"code", "msg", "details"}.
        let why = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                let msg = v["msg"].as_str()?;
                Some(match v["details"].as_str() {
                    Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                    _ => msg.to_string(),
                })
            })
            .unwrap_or_else(|| {
                String::from_utf8_lossy(if out.stdout.is_empty() {
                    &out.stderr
                } else {
                    &out.stdout
                })
                .trim()
                .chars()
                .take(500)
                .collect()
            });
        Err(net_err(format!(
            "the bridge plugin failed ({command}, {}): {why}",
            out.status
        )))
    }

    fn chains(&self) -> (String, String) {
        let b = &self.options.bridge;
        (format!("BERTH-{b}-IN"), format!("BERTH-{b}-FWD"))
    }

    /// The filter chain of the instances' `allowed_networks` rules.
    fn allow_chain(&self) -> String {
        format!("BERTH-{}-ALLOW", self.options.bridge)
    }

    /// The `nat` chain masquerading the instances' egress.
    fn nat_chain(&self) -> String {
        format!("BERTH-{}-NAT", self.options.bridge)
    }

    async fn install_rules(&self) -> Result<()> {
        // Start from nothing of ours: a crashed run may have left them.
        self.remove_rules().await;
        let b = self.options.bridge.as_str();
        let (input, forward) = self.chains();
        let nat = self.nat_chain();
        let allow = self.allow_chain();
        let refused: Vec<String> = REFUSED
            .iter()
            .filter(|r| r.network.addr().is_ipv4())
            .map(|r| r.network.to_string())
            .collect();
        let resolvers: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
            .map(|host| instance_nameservers(&host))
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| ip.is_ipv4() && is_internal(*ip))
            .map(|ip| ip.to_string())
            .collect();
        for tool in ["iptables", "ip6tables"] {
            let mut rules: Vec<Vec<&str>> = vec![
                vec!["-N", &input],
                vec![
                    "-A",
                    &input,
                    "-i",
                    b,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                vec!["-A", &input, "-i", b, "-j", "DROP"],
                vec!["-N", &forward],
                vec![
                    "-A",
                    &forward,
                    "-o",
                    b,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                vec!["-A", &forward, "-o", b, "-j", "DROP"],
                vec!["-A", &forward, "-i", b, "-o", b, "-j", "DROP"],
            ];
            if tool == "iptables" {
                rules.push(vec!["-N", &allow]);
                rules.push(vec!["-A", &forward, "-i", b, "-j", &allow]);
                for dns in &resolvers {
                    for proto in ["udp", "tcp"] {
                        rules.push(vec![
                            "-A", &forward, "-i", b, "-d", dns, "-p", proto, "--dport", "53", "-j",
                            "ACCEPT",
                        ]);
                    }
                }
                for net in &refused {
                    rules.push(vec!["-A", &forward, "-i", b, "-d", net, "-j", "DROP"]);
                }
                rules.push(vec!["-A", &forward, "-i", b, "-j", "ACCEPT"]);
            } else {
                // Instances get no IPv6 address: nothing of theirs goes out.
                rules.push(vec!["-A", &forward, "-i", b, "-j", "DROP"]);
            }
            rules.push(vec!["-I", "INPUT", "1", "-j", &input]);
            rules.push(vec!["-I", "FORWARD", "1", "-j", &forward]);
            if tool == "iptables" {
                let subnet = self.options.subnet.as_str();
                rules.extend([
                    vec!["-t", "nat", "-N", &nat],
                    vec!["-t", "nat", "-A", &nat, "!", "-s", subnet, "-j", "RETURN"],
                    vec!["-t", "nat", "-A", &nat, "-d", subnet, "-j", "RETURN"],
                    vec!["-t", "nat", "-A", &nat, "-d", "224.0.0.0/4", "-j", "RETURN"],
                    vec!["-t", "nat", "-A", &nat, "-j", "MASQUERADE"],
                    vec!["-t", "nat", "-I", "POSTROUTING", "1", "-j", &nat],
                ]);
            }
            for rule in rules {
                if let Err(e) = run(tool, &rule).await {
                    if tool == "ip6tables" && !Path::new("/proc/net/if_inet6").exists() {
                        break; // No IPv6 on this host: nothing to guard.
                    }
                    self.remove_rules().await;
                    return Err(net_err(format!(
                        "cannot install berth's firewall rules ({tool} {}): {e}",
                        rule.join(" ")
                    )));
                }
            }
        }
        Ok(())
    }

    async fn remove_rules(&self) {
        let (input, forward) = self.chains();
        for tool in ["iptables", "ip6tables"] {
            for (parent, chain) in [("INPUT", &input), ("FORWARD", &forward)] {
                // Every jump (a crashed run may have added more than one).
                while run(tool, &["-D", parent, "-j", chain]).await.is_ok() {}
                let _ = run(tool, &["-F", chain]).await;
                let _ = run(tool, &["-X", chain]).await;
            }
        }
        // Jumped to from FORWARD only: gone once FORWARD's chain is.
        let allow = self.allow_chain();
        let _ = run("iptables", &["-F", &allow]).await;
        let _ = run("iptables", &["-X", &allow]).await;
        self.allowances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let nat = self.nat_chain();
        while run("iptables", &["-t", "nat", "-D", "POSTROUTING", "-j", &nat])
            .await
            .is_ok()
        {}
        let _ = run("iptables", &["-t", "nat", "-F", &nat]).await;
        let _ = run("iptables", &["-t", "nat", "-X", &nat]).await;
    }
}

/// Runs `program args…` (with `-w`, waiting for the xtables lock, for the
/// iptables family); its stderr on failure.
async fn run(program: &str, args: &[&str]) -> std::result::Result<(), String> {
    let mut cmd = tokio::process::Command::new(program);
    if program.ends_with("tables") {
        cmd.arg("-w");
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The address of a `nameserver` line's value, if an instance can use it
/// (not loopback).
fn instance_nameserver(value: &str) -> Option<IpAddr> {
    value.parse::<IpAddr>().ok().filter(|a| !a.is_loopback())
}

/// The resolvers [`instance_resolv_conf`] hands an instance: its egress
/// reaches them on port 53 even in a refused range (a resolver on the
/// host's private network is the common case).
pub fn instance_nameservers(host: &str) -> Vec<IpAddr> {
    host.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next().and_then(instance_nameserver))
                .flatten()
        })
        .collect()
}

/// The first nameserver lines of the host's `resolv.conf` that an instance
/// can use through NAT (loopback resolvers, such as systemd-resolved's
/// 127.0.0.53, are on the host only), with its `search` and `options`
/// lines.
pub fn instance_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if words.next().and_then(instance_nameserver).is_some() {
                    out.push_str(line.trim());
                    out.push('\n');
                }
            }
            Some("search" | "options" | "domain") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(BridgeOptions::default().validate().is_ok());
        let bad = |bridge: &str, subnet: &str| {
            BridgeOptions {
                bridge: bridge.into(),
                subnet: subnet.into(),
                ..BridgeOptions::default()
            }
            .validate()
            .unwrap_err()
        };
        assert!(bad("a-bridge-name-too-long", DEFAULT_SUBNET).contains("bridge name"));
        assert!(bad("br;rm", DEFAULT_SUBNET).contains("bridge name"));
        assert!(bad("b", "10.213.0.1/16").contains("not an IPv4 subnet"));
        assert!(bad("b", "8.8.8.0/24").contains("not a private subnet"));
        assert!(bad("b", "10.0.0.0/30").contains("prefix length"));
        assert!(bad("b", "10.0.0.0").contains("not an IPv4 subnet"));
    }

    #[test]
    fn resolv_conf_drops_loopback_resolvers() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nsearch example.internal\noptions edns0 trust-ad\n";
        assert_eq!(
            instance_resolv_conf(host),
            "nameserver 10.255.255.53\nsearch example.internal\noptions edns0 trust-ad\n"
        );
        assert_eq!(
            instance_nameservers(host),
            [IpAddr::from([10, 255, 255, 53])]
        );
    }
}
