//! The apply layer: runs `nft` with a script, optionally inside a network namespace.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::error::Error;
use super::render;

/// How long one `nft` invocation may take before it is killed.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `nft` in this process's network namespace, or in a named one (`ip netns exec`),
/// which is how tests program a namespace that plays the node.
#[derive(Clone, Debug, Default)]
pub struct Nft {
    netns: Option<String>,
}

impl Nft {
    /// `nft` in this process's network namespace.
    pub fn host() -> Nft {
        Nft { netns: None }
    }

    /// `nft` inside the named network namespace (as listed by `ip netns`).
    pub fn in_netns(name: impl Into<String>) -> Nft {
        Nft {
            netns: Some(name.into()),
        }
    }

    /// The network namespace `nft` runs in, if not this process's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Applies `script` with `nft -f -`: one transaction, all of it or nothing.
    ///
    /// # Errors
    /// [`Error::Spawn`] when `nft` cannot run, [`Error::Nft`] when it rejects the script,
    /// [`Error::Timeout`] after [`NFT_TIMEOUT`].
    pub async fn apply(&self, script: &str) -> Result<(), Error> {
        self.run(&["-f", "-"], Some(script)).await.map(drop)
    }

    /// Removes `table` (family `ip`); succeeds when it does not exist.
    ///
    /// # Errors
    /// As [`Nft::apply`].
    pub async fn delete_table(&self, table: &str) -> Result<(), Error> {
        self.apply(&render::render_teardown(table)).await
    }

    /// The output of `nft list tables`.
    ///
    /// # Errors
    /// As [`Nft::apply`].
    pub async fn list_tables(&self) -> Result<String, Error> {
        self.run(&["list", "tables"], None).await
    }

    /// The output of `nft list table ip <table>`.
    ///
    /// # Errors
    /// As [`Nft::apply`].
    pub async fn list_table(&self, table: &str) -> Result<String, Error> {
        self.run(&["list", "table", "ip", table], None).await
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = if self.netns.is_some() {
            "ip netns exec … nft"
        } else {
            "nft"
        };
        let spawn_err = |source| Error::Spawn {
            program: program.to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let work = async {
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).await.map_err(spawn_err)?;
                // Dropping the pipe closes it: nft reads to end of file.
            }
            child.wait_with_output().await.map_err(spawn_err)
        };
        let output = tokio::time::timeout(NFT_TIMEOUT, work)
            .await
            .map_err(|_| Error::Timeout(NFT_TIMEOUT))??;
        if !output.status.success() {
            return Err(Error::Nft {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
