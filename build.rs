//! Build script: the revision `pimbridge_build_info` reports — `git rev-parse --short HEAD` when
//! git and a repository are there, else `PIMBRIDGE_REVISION` (e.g. a container build without
//! `.git`), else `unknown`. Never fails the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PIMBRIDGE_REVISION");
    // A commit or checkout moves HEAD (or its log): then the revision is read again.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = std::path::Path::new(&dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let revision = git(&["rev-parse", "--short", "HEAD"])
        .or_else(|| {
            std::env::var("PIMBRIDGE_REVISION")
                .ok()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PIMBRIDGE_BUILD_REVISION={revision}");
}
