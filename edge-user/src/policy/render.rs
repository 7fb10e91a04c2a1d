//! A policy written back in the config file's own schema: what `edge config show` prints.
use toml::{Table, Value};

use super::{AdmissionSettings, JwksSource, OnOutage, Policy};

/// `max_sources` and the `[admission.queueit]`, `[admission.jwt]` and `[admission.http]` tables.
fn waiting_rooms(a: &AdmissionSettings, admission: &mut Table) {
    let path = |p: &std::path::Path| Value::String(p.display().to_string());
    let int = |n: u32| Value::Integer(i64::from(n));
    let strings =
        |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
    if a.max_sources != AdmissionSettings::default().max_sources {
        admission.insert("max_sources".into(), int(a.max_sources));
    }
    if let Some(q) = &a.queueit {
        let mut t = Table::new();
        t.insert("secret_file".into(), path(&q.secret_file));
        t.insert("events".into(), strings(&q.events));
        t.insert("admit_for_s".into(), int(q.admit_for_s));
        admission.insert("queueit".into(), Value::Table(t));
    }
    if let Some(j) = &a.jwt {
        let mut t = Table::new();
        match &j.keys {
            JwksSource::File(file) => {
                t.insert("jwks_file".into(), path(file));
            }
            JwksSource::Url { url, ca_file, refresh_s, max_age_s } => {
                t.insert("jwks_url".into(), Value::String(url.clone()));
                if let Some(ca) = ca_file {
                    t.insert("jwks_ca_file".into(), path(ca));
                }
                t.insert("jwks_refresh_s".into(), int(*refresh_s));
                t.insert("jwks_max_age_s".into(), int(*max_age_s));
            }
        }
        t.insert("issuer".into(), Value::String(j.issuer.clone()));
        t.insert("audience".into(), strings(&j.audience));
        t.insert("algorithms".into(), strings(&j.algorithms));
        let claims = j.claims.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())));
        t.insert("claims".into(), Value::Table(claims.collect()));
        t.insert("leeway_s".into(), int(j.leeway_s));
        if let Some(cap) = j.max_admit_s {
            t.insert("max_admit_s".into(), int(cap));
        }
        admission.insert("jwt".into(), Value::Table(t));
    }
    if let Some(h) = &a.http {
        let mut t = Table::new();
        t.insert("listen".into(), Value::String(h.listen.to_string()));
        if let Some((cert, key)) = &h.tls {
            t.insert("tls_cert".into(), path(cert));
            t.insert("tls_key".into(), path(key));
        }
        t.insert("targets".into(), strings(&h.targets));
        for (key, value) in [
            ("max_connections", h.max_connections),
            ("source_pps", h.source_pps),
            ("source_burst", h.source_burst),
            ("global_pps", h.global_pps),
            ("global_burst", h.global_burst),
        ] {
            t.insert(key.into(), int(value));
        }
        admission.insert("http".into(), Value::Table(t));
    }
}

impl Policy {
    /// The policy in the config file's own schema (what `edge config show` prints); parsing it
    /// back gives the same policy.
    pub fn to_toml(&self) -> String {
        let strings =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        let mut root = Table::new();
        root.insert("mode".into(), Value::String(self.mode.to_string()));
        let a = &self.auto;
        let mut auto = Table::new();
        for (key, value) in [
            ("enter_pps", a.enter_pps),
            ("exit_pps", a.exit_pps),
            ("sustain_s", a.sustain_s),
            ("cool_down_s", a.cool_down_s),
        ] {
            auto.insert(key.into(), Value::Integer(i64::from(value)));
        }
        root.insert("auto".into(), Value::Table(auto));
        let mut scope = Table::new();
        scope.insert(
            "protect".into(),
            strings(self.protect.iter().map(|p| p.to_string()).collect()),
        );
        root.insert("scope".into(), Value::Table(scope));
        let u = &self.unknown;
        let mut unknown = Table::new();
        for (key, value) in [
            ("rate_pps", u.rate_pps),
            ("burst", u.burst),
            ("global_pps", u.global_pps),
            ("global_burst", u.global_burst),
            ("prefix_v4", u32::from(u.prefix_v4)),
            ("prefix_v6", u32::from(u.prefix_v6)),
        ] {
            unknown.insert(key.into(), Value::Integer(i64::from(value)));
        }
        root.insert("unknown".into(), Value::Table(unknown));
        let mut window = Table::new();
        window.insert("days".into(), Value::Integer(i64::from(self.window_days)));
        window.insert("max_jump_days".into(), Value::Integer(i64::from(self.max_jump_days)));
        root.insert("window".into(), Value::Table(window));
        let mut events = Table::new();
        events.insert("drop_sample".into(), Value::Integer(i64::from(self.drop_sample)));
        root.insert("events".into(), Value::Table(events));
        let mut learning = Table::new();
        learning.insert("handshakes".into(), Value::Boolean(self.learn_handshakes));
        root.insert("learning".into(), Value::Table(learning));
        let c = &self.syn_cookies;
        let mut cookies = Table::new();
        cookies.insert("mode".into(), Value::String(c.mode.to_string()));
        for (key, value) in [("reply_pps", Some(c.reply_pps)), ("reply_burst", Some(c.reply_burst))]
            .into_iter()
            .chain([("mss_v4", c.mss_v4.map(u32::from)), ("mss_v6", c.mss_v6.map(u32::from))])
        {
            if let Some(value) = value {
                cookies.insert(key.into(), Value::Integer(i64::from(value)));
            }
        }
        root.insert("syn_cookies".into(), Value::Table(cookies));
        let mut lists = Table::new();
        lists.insert("allow".into(), strings(self.allow.iter().map(|n| n.to_string()).collect()));
        lists.insert("deny".into(), strings(self.deny.iter().map(|n| n.to_string()).collect()));
        if let Some(v) = &self.visitors {
            lists.insert("visitors".into(), Value::String(v.display().to_string()));
        }
        root.insert("lists".into(), Value::Table(lists));
        let mut admission = Table::new();
        if let Some(k) = &self.admission.keys {
            admission.insert("keys".into(), Value::String(k.display().to_string()));
        }
        if let Some(port) = self.admission.knock_port {
            admission.insert("knock_port".into(), Value::Integer(i64::from(port)));
        }
        if let Some(feed) = &self.admission.feed {
            admission.insert("redis_url".into(), Value::String(feed.redis_url.clone()));
            admission.insert("stream".into(), Value::String(feed.stream.clone()));
            admission
                .insert("outage_grace_s".into(), Value::Integer(i64::from(feed.outage_grace_s)));
            let (name, ceiling) = match feed.on_outage {
                OnOutage::Hold => ("hold", None),
                OnOutage::OpenRateLimited { ceiling_pps } => {
                    ("open-rate-limited", Some(ceiling_pps))
                }
            };
            admission.insert("on_queue_outage".into(), Value::String(name.into()));
            if let Some(c) = ceiling {
                admission.insert("outage_ceiling_pps".into(), Value::Integer(i64::from(c)));
            }
        }
        waiting_rooms(&self.admission, &mut admission);
        if !admission.is_empty() {
            root.insert("admission".into(), Value::Table(admission));
        }
        if let Some(f) = &self.fleet {
            let mut fleet = Table::new();
            fleet.insert("redis_url".into(), Value::String(f.redis_url_redacted()));
            fleet.insert("node".into(), Value::String(f.node.clone()));
            fleet.insert("stream".into(), Value::String(f.stream.clone()));
            fleet.insert("key_file".into(), Value::String(f.key_file.display().to_string()));
            fleet.insert("local_mode".into(), Value::Boolean(f.local_mode));
            let interval = i64::from(f.snapshot_interval_s);
            fleet.insert("snapshot_interval_s".into(), Value::Integer(interval));
            fleet.insert("degraded_after_s".into(), Value::Integer(i64::from(f.degraded_after_s)));
            fleet.insert("node_timeout_s".into(), Value::Integer(i64::from(f.node_timeout_s)));
            let path = |p: &std::path::Path| Value::String(p.display().to_string());
            if let Some(ca) = &f.tls_ca_file {
                fleet.insert("tls_ca_file".into(), path(ca));
            }
            if let Some((cert, key)) = &f.tls_client {
                fleet.insert("tls_client_cert".into(), path(cert));
                fleet.insert("tls_client_key".into(), path(key));
            }
            root.insert("fleet".into(), Value::Table(fleet));
        }
        if let Some(d) = &self.daemon {
            let mut daemon = Table::new();
            daemon.insert("interfaces".into(), strings(d.interfaces.clone()));
            daemon.insert("state_dir".into(), Value::String(d.state_dir.display().to_string()));
            daemon.insert("socket".into(), Value::String(d.socket.display().to_string()));
            if let Some(tcp) = &d.tcp {
                let path = |p: &std::path::Path| Value::String(p.display().to_string());
                daemon.insert("tcp_listen".into(), Value::String(tcp.listen.to_string()));
                daemon.insert("token_file".into(), path(&tcp.token_file));
                match &tcp.tls {
                    Some((cert, key)) => {
                        daemon.insert("tls_cert".into(), path(cert));
                        daemon.insert("tls_key".into(), path(key));
                    }
                    None => {
                        daemon.insert("tcp_plaintext".into(), Value::Boolean(true));
                    }
                }
                if let Some(ca) = &tcp.client_ca {
                    daemon.insert("tls_client_ca".into(), path(ca));
                }
            }
            daemon.insert(
                "xdp_mode".into(),
                Value::String(format!("{:?}", d.xdp_mode).to_lowercase()),
            );
            daemon.insert(
                "metrics_listen".into(),
                Value::String(d.metrics_listen.map_or(String::new(), |a| a.to_string())),
            );
            root.insert("daemon".into(), Value::Table(daemon));
        }
        toml::to_string(&root).expect("a TOML table always renders")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Policy {
        Policy::parse(text, "p.toml", Path::new("/etc/edge")).unwrap()
    }

    #[test]
    fn rendered_toml_parses_back_to_the_same_policy() {
        let p = parse(
            "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\", \"udp/8000-8100\", \"tcp/*\"]\n\
             [unknown]\nrate_pps = 7\nprefix_v4 = 24\n[lists]\nallow = [\"10.0.0.0/8\"]\n\
             deny = [\"2001:db8::/32\"]\n[admission]\nkeys = \"k\"\nknock_port = 7000\n\
             [window]\nmax_jump_days = 3\n\
             [daemon]\ninterfaces = [\"eth0\"]\nstate_dir = \"/s\"\ntcp_listen = \"127.0.0.1:7443\"\n\
             token_file = \"t\"\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_client_ca = \"ca\"\n",
        );
        assert_eq!(parse(&p.to_toml()), p);
        let plain = parse(
            "[daemon]\ninterfaces = [\"eth0\"]\ntcp_listen = \"127.0.0.1:1\"\ntoken_file = \"t\"\n\
             tcp_plaintext = true\n",
        );
        assert_eq!(parse(&plain.to_toml()), plain);
        let default = Policy::default();
        assert_eq!(parse(&default.to_toml()), default);
        let tokens = parse(
            "[admission]\nmax_sources = 2\nredis_url = \"redis://127.0.0.1:1\"\n\
             [admission.queueit]\nsecret_file = \"q\"\nevents = [\"e1\"]\n\
             [admission.jwt]\njwks_url = \"https://q.example/k\"\njwks_ca_file = \"ca\"\n\
             issuer = \"i\"\naudience = [\"a\", \"b\"]\nalgorithms = [\"ES256\"]\n\
             claims = { token_use = \"access\" }\nmax_admit_s = 60\n\
             [admission.http]\nlisten = \"[::]:8443\"\ntls_cert = \"c\"\ntls_key = \"k\"\n\
             targets = [\"https://shop.example/a/\"]\n",
        );
        assert_eq!(parse(&tokens.to_toml()), tokens);
    }
}
