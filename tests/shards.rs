//! Sharding end to end, on loopback: one config of 12 cameras (examples/rtsp_serve serving one
//! pre-encoded clip 12 times, as a camera farm), three gradcam-stream processes with
//! `--shard 0/3`, `1/3` and `2/3`. Each camera is explained by exactly one of them (their
//! `/metrics`), every recording plays, a process killed and restarted takes the same cameras
//! again, and a fourth shard would move only its share. A shard left with no camera idles,
//! healthy.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use gradcam_stream::shard;

const CAMERAS: usize = 12;

fn names() -> Vec<String> {
    (0..CAMERAS).map(|i| format!("cam{i}")).collect()
}

/// The site's one config: every camera a `[[stream]]` table, recordings named by stream.
fn site(dir: &Path, port: u16) -> Result<PathBuf> {
    let mut toml = format!(
        "output = \"{}/{{stream}}.mkv\"\nrtsp_transport = \"tcp\"\n",
        dir.display()
    );
    for n in names() {
        toml.push_str(&format!(
            "\n[[stream]]\nname = \"{n}\"\ninput = \"rtsp://127.0.0.1:{port}/{n}\"\n"
        ));
    }
    let path = dir.join("site.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// One shard of the site, running until it is told to stop (SIGINT): three processes starting
/// together on a small machine may take a while before every camera has its first frame.
fn shard_run(site: &Path, index: usize) -> Result<Running> {
    Running::explain(&[
        "--config",
        site.to_str().unwrap(),
        "--shard",
        &format!("{index}/3"),
        "--metrics",
        "127.0.0.1:0",
        "--batch-size",
        "4",
        "--progress",
        "none",
    ])
}

/// The streams a shard's startup line names.
fn streams_of(run: &Running, index: usize) -> Result<Vec<String>> {
    let line = run.wait_for(&format!("shard {index}/3: "), Duration::from_secs(30))?;
    let list = line.rsplit_once("configured: ").context(line.clone())?.1;
    Ok(list.split(", ").map(str::to_owned).collect())
}

/// Every stream of `mine` explains frames, and the shard's /metrics has no other camera.
fn explains_only(run: &Running, mine: &[String]) -> Result<()> {
    let base = metrics_url(run)?;
    // Twelve frames each, so that every recording has more than the ten it is checked for
    // (a wait for ten let a restarted shard's recording end with exactly ten, in CI).
    let waiting = |m: &std::collections::HashMap<(String, String), f64>| -> Vec<String> {
        mine.iter()
            .filter(|n| {
                let out = get(m, "gradcam_stream_frames_out_total", n);
                out.is_nan() || out < 12.0
            })
            .cloned()
            .collect()
    };
    let done = eventually(
        Duration::from_secs(120),
        "each camera of the shard explained",
        || Ok(waiting(&scrape(&base)?).is_empty()),
    );
    if let Err(e) = done {
        let left = scrape(&base).map(|m| waiting(&m)).unwrap_or_default();
        anyhow::bail!("{e}; still waiting for {left:?}\n{}", run.output());
    }
    let m = scrape(&base)?;
    for n in names().iter().filter(|n| !mine.contains(n)) {
        anyhow::ensure!(
            get(&m, "gradcam_stream_frames_in_total", n).is_nan(),
            "{n} is not this shard's, yet its /metrics has it"
        );
    }
    Ok(())
}

#[test]
fn three_shards_split_twelve_cameras_and_a_restarted_one_takes_its_own_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("camera.mp4");
    // A camera's stream: H.264 with a key frame every second.
    camera_clip(&clip, "testsrc=size=160x120:rate=10", 10)?;
    let port = free_port()?;
    let farm = Running::rtsp_cameras(
        port,
        "/cam",
        clip.to_str().unwrap(),
        &["--loop", "--cameras", &CAMERAS.to_string()],
    )?;
    farm.url()?;
    let out = dir.path().join("rec");
    std::fs::create_dir(&out)?;
    let site = site(&out, port)?;

    let mut runs: Vec<Running> = (0..3).map(|i| shard_run(&site, i)).collect::<Result<_>>()?;
    let mut held: Vec<Vec<String>> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let mine = streams_of(run, i)?;
        println!("shard {i}/3: {mine:?}");
        // What the process took is what the hashing gives (the library's own function).
        let expected: Vec<String> = names()
            .into_iter()
            .filter(|n| shard::owner(n, 3) == i as u32)
            .collect();
        assert_eq!(mine, expected, "shard {i}");
        held.push(mine);
    }
    let mut all: Vec<String> = held.concat();
    all.sort();
    let mut want = names();
    want.sort();
    assert_eq!(all, want, "each camera in exactly one shard");
    for (run, mine) in runs.iter().zip(&held) {
        explains_only(run, mine)?;
    }

    // Shard 1 killed outright, and started again: it takes the same cameras.
    runs[1].signal("-KILL")?;
    let restarted = shard_run(&site, 1)?;
    let again = streams_of(&restarted, 1)?;
    assert_eq!(again, held[1], "the restarted shard's cameras");
    explains_only(&restarted, &again)?;
    runs[1] = restarted;

    for (i, run) in runs.into_iter().enumerate() {
        run.signal("-INT")?;
        let (code, text) = run.wait(Duration::from_secs(90))?;
        assert_eq!(code, Some(0), "shard {i}: {text}");
    }
    drop(farm);
    for n in names() {
        let rec = out.join(format!("{n}.mkv"));
        let frames = ffprobe_pts(&rec).with_context(|| format!("{n}'s recording"))?;
        assert!(frames.len() > 10, "{n}: {} frames", frames.len());
    }

    // A fourth shard would take only its share: about 1/4, each to itself.
    let moved: Vec<String> = names()
        .into_iter()
        .filter(|n| shard::owner(n, 3) != shard::owner(n, 4))
        .collect();
    println!(
        "going to 4 shards moves {} of {CAMERAS}: {moved:?}",
        moved.len()
    );
    assert!(moved.len() <= 5, "{moved:?}");
    assert!(moved.iter().all(|n| shard::owner(n, 4) == 3));
    Ok(())
}

#[test]
fn a_shard_with_no_camera_idles_healthily() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // One camera over many shards: most hold nothing.
    let site = dir.path().join("one.toml");
    std::fs::write(
        &site,
        "[[stream]]\nname = \"door\"\ninput = \"rtsp://127.0.0.1:9/door\"\noutput = \"null\"\n",
    )?;
    let empty = (0..8).find(|&i| shard::owner("door", 8) != i).unwrap();
    // As a StatefulSet pod runs it: its ordinal from the host name, the count from the env.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"));
    cmd.args([
        "--config",
        site.to_str().unwrap(),
        "--shard",
        "auto",
        "--metrics",
        "127.0.0.1:0",
    ])
    .env("HOSTNAME", format!("gradcam-stream-{empty}"))
    .env("GRADCAM_SHARDS", "8");
    let run = Running::spawn(cmd)?;
    let line = run.wait_for("shard ", Duration::from_secs(30))?;
    assert!(
        line.contains(&format!(
            "shard {empty}/8: 0 of the 1 streams configured; idle"
        )),
        "{line}"
    );
    let base = metrics_url(&run)?;
    let (code, body) = http_get(&format!("{base}/healthz"))?;
    assert_eq!(code, 200, "{body}");
    let (code, _) = http_get(&format!("{base}/metrics"))?;
    assert_eq!(code, 200);
    run.signal("-INT")?;
    let (code, text) = run.wait(Duration::from_secs(20))?;
    assert_eq!(code, Some(0), "{text}");
    // Without the count, `auto` is a usage error naming what to set.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .args(["--config", site.to_str().unwrap(), "--shard", "auto"])
        .env("HOSTNAME", "gradcam-stream-0")
        .env_remove("GRADCAM_SHARDS")
        .output()?;
    assert_fails(&o, 2, "GRADCAM_SHARDS is not set");
    Ok(())
}
