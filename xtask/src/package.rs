//! `cargo xtask package`: a Debian package made with dpkg-deb from the files
//! `cargo xtask install` lays out. The binary, man pages and completions go under /usr, the
//! unit under /usr/lib/systemd/system, the example config is a conffile, the alert rules and
//! the dashboard go under /usr/share/edge. The maintainer scripts create the `edge` system user,
//! and restart a running daemon on upgrade: the restart replaces the program in its pinned
//! link, so the upgrade is hitless. A purge removes the user and the store, unless
//! /var/lib/edge/KEEP exists.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd edge >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/edge \
            --shell /usr/sbin/nologin edge
    fi
    install -d -o edge -g edge -m 0700 /var/lib/edge
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        # An upgrade: the new binary replaces the running program in its link (hitless).
        systemctl try-restart edge.service || true
    fi
fi
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
# Removal stops the daemon (the filter stays attached until `edge detach`); an upgrade
# keeps it running until postinst restarts it with the new binary.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop edge.service || true
fi
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
    # The store goes with the package unless the operator asked to keep it.
    if [ -e /var/lib/edge/KEEP ]; then
        echo "edge: keeping /var/lib/edge (it holds KEEP)"
    else
        rm -rf /var/lib/edge
    fi
    rmdir /etc/edge 2>/dev/null || true
    if getent passwd edge >/dev/null; then
        userdel edge || true
    fi
    if getent group edge >/dev/null; then
        groupdel edge 2>/dev/null || true
    fi
fi
"#;

/// Stages the package from `edge` (a built binary) into `out`, returns the .deb's path.
pub fn package(edge: &Path, out: &Path, version: &str, compress: bool) -> Result<PathBuf> {
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let stage = out.join(format!("edge_{version}_{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    super::install(edge, &stage, Path::new("usr"))?;
    // As dh_strip does: the package carries no debug info (a debug build's is over 90 % of the
    // binary). Symbols stay, so backtraces still name functions.
    let bin = stage.join("usr/bin/edge");
    let stripped = Command::new("strip").arg("--strip-debug").arg(&bin).output();
    match stripped {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            bail!("strip --strip-debug {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => bail!("strip (binutils) is needed to package: {e}"),
    }
    // Packaged units live under /usr/lib; /etc/systemd/system is the administrator's.
    let units = stage.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    std::fs::rename(stage.join("etc/systemd/system/edge.service"), units.join("edge.service"))?;
    std::fs::remove_dir_all(stage.join("etc/systemd"))?;
    let share = stage.join("usr/share/edge");
    for (from, to) in [
        ("packaging/prometheus/edge.rules.yml", "prometheus/edge.rules.yml"),
        ("packaging/grafana/edge.json", "grafana/edge.json"),
    ] {
        let to = share.join(to);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(from, &to).with_context(|| format!("copying {from}"))?;
    }
    let docs = stage.join("usr/share/doc/edge");
    std::fs::create_dir_all(&docs)?;
    for doc in ["README.md", "docs/operations.md", "docs/tokens.md", "docs/fleet.md"] {
        let name = Path::new(doc).file_name().unwrap();
        std::fs::copy(doc, docs.join(name))?;
    }
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let size_kib = du_kib(&stage)?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: edge\nVersion: {version}\nArchitecture: {arch}\nSection: net\n\
             Priority: optional\nMaintainer: edge maintainers <edge@localhost>\n\
             Depends: libc6 (>= 2.34), passwd\nRecommends: systemd\n\
             Suggests: redis-server, prometheus\nInstalled-Size: {size_kib}\n\
             Description: XDP edge admission filter\n \
             edge drops unwanted traffic at the NIC: during an attack or a rush it lets through\n \
             recent visitors, an allow list and sources a waiting room admitted (edge tickets,\n \
             Queue-it tokens, JWTs), and gives everything else a small budget or nothing.\n"
        ),
    )?;
    std::fs::write(debian.join("conffiles"), "/etc/edge/edge.toml\n")?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = debian.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let deb = out.join(format!("edge_{version}_{arch}.deb"));
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .args(if compress { &[][..] } else { &["-Znone"][..] })
        .arg(&stage)
        .arg(&deb)
        .output()
        .context("dpkg-deb")?;
    if !built.status.success() {
        bail!("dpkg-deb: {}", String::from_utf8_lossy(&built.stderr));
    }
    std::fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn du_kib(dir: &Path) -> Result<u64> {
    let text = output(Command::new("du").args(["-sk"]).arg(dir))?;
    Ok(text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}
