//! The deployment files: every Kubernetes manifest valid against Kubernetes' own schemas
//! (kubernetes-validate --strict, offline, from the project's virtualenv), the StatefulSet's
//! shard count kept equal to its replicas and its pods run `--shard auto`; the Dockerfile
//! installs the binary and the GStreamer element. No container engine runs here: the image
//! itself is not built by any test.

mod common;

use std::process::Command;

use anyhow::{Context, Result};
use common::*;

fn manifests() -> Result<Vec<std::path::PathBuf>> {
    let mut m: Vec<_> = std::fs::read_dir(root().join("deploy"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    m.sort();
    anyhow::ensure!(!m.is_empty(), "no manifests in deploy/");
    Ok(m)
}

#[test]
fn every_manifest_is_valid_kubernetes() -> Result<()> {
    let tool = root().join(".venv/bin/kubernetes-validate");
    for m in manifests()? {
        let o = Command::new(&tool)
            .args(["--strict", "--no-warn"])
            .arg(&m)
            .output()
            .with_context(|| format!("running {} (make setup installs it)", tool.display()))?;
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        println!("{text}");
        assert!(o.status.success(), "{}: {text}", m.display());
        assert!(!text.contains("ERROR"), "{text}");
    }
    Ok(())
}

#[test]
fn the_statefulset_runs_one_shard_a_pod() -> Result<()> {
    // Read with PyYAML (kubernetes-validate's own dependency): the StatefulSet's replicas,
    // its GRADCAM_SHARDS, its args, its GPU, and the headless Service and budget beside it.
    let script = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kind = {d["kind"]: d for d in docs}
s = kind["StatefulSet"]["spec"]
c = s["template"]["spec"]["containers"][0]
env = {e["name"]: e for e in c["env"]}
print(s["replicas"], env["GRADCAM_SHARDS"]["value"], " ".join(c["args"]),
      c["resources"]["limits"]["nvidia.com/gpu"], kind["Service"]["spec"]["clusterIP"],
      "secret" if "secretKeyRef" in env["GRADCAM_RTSP_AUTH"]["valueFrom"] else "plain",
      kind["PodDisruptionBudget"]["spec"]["maxUnavailable"])
"#;
    let o = Command::new(python())
        .args(["-c", script])
        .arg(root().join("deploy/kubernetes.yaml"))
        .output()?;
    anyhow::ensure!(o.status.success(), "{}", stderr(&o));
    let got = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    println!("replicas, GRADCAM_SHARDS, args, GPUs, Service, auth, budget: {got}");
    let f: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(f[0], f[1], "GRADCAM_SHARDS must equal the replicas: {got}");
    assert!(got.contains("--shard auto"), "{got}");
    assert!(got.ends_with("1 None secret 1"), "{got}");
    Ok(())
}

#[test]
fn the_image_carries_the_binary_and_the_element() -> Result<()> {
    let d = std::fs::read_to_string(root().join("Dockerfile"))?;
    assert!(d.contains("/usr/local/bin/gradcam-stream"), "the binary");
    assert!(
        d.contains("libgstgradcam.so") && d.contains("gstreamer-1.0/"),
        "the element, where GStreamer finds plugins"
    );
    // The element is built by `make build` (the workspace) where the Dockerfile copies it from.
    assert!(root().join("crates/gst-plugin-gradcam/Cargo.toml").exists());
    Ok(())
}
