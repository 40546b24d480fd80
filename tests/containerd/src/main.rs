//! `seam-e2e-cri`: a minimal CRI v1 client for the containerd end-to-end test.
//!
//! It talks to containerd's CRI plug-in over its Unix socket as kubelet does, so that pod
//! networking goes through containerd's own CNI path (go-cni/libcni → `seam-cni`):
//!
//! - `pod-up`: RunPodSandbox (CNI ADD with `K8S_POD_NAMESPACE`/`K8S_POD_NAME`), PodSandboxStatus
//!   for the pod IP, then CreateContainer + StartContainer of a container that sleeps. Prints
//!   `POD_ID=…`, `POD_IP=…`, `CONTAINER_ID=…` lines a shell can `eval`.
//! - `exec`: ExecSync of a command in a container; exits with the command's exit code.
//! - `pod-down`: stops and removes the pod's containers, StopPodSandbox (CNI DEL),
//!   RemovePodSandbox.
//! - `clean`: `pod-down` for every sandbox the runtime knows (for clean-up traps).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, LinuxContainerConfig, LinuxPodSandboxConfig, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

type Runtime = RuntimeServiceClient<Channel>;

#[derive(Parser, Debug)]
#[command(
    name = "seam-e2e-cri",
    about = "Minimal CRI v1 client for Seam's containerd e2e test"
)]
struct Cli {
    /// containerd's gRPC socket.
    #[arg(long)]
    socket: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the runtime's name and version.
    Version,
    /// Run a pod sandbox and start a sleeping container in it.
    PodUp {
        /// Pod name (K8S_POD_NAME).
        #[arg(long)]
        name: String,
        /// Pod namespace (K8S_POD_NAMESPACE).
        #[arg(long)]
        namespace: String,
        /// Pod UID.
        #[arg(long)]
        uid: String,
        /// Image of the container (already imported into containerd's k8s.io namespace).
        #[arg(long)]
        image: String,
        /// Directory for the pod's container logs.
        #[arg(long)]
        log_dir: String,
    },
    /// Run a command in a container (ExecSync); exits with its exit code.
    Exec {
        /// Container id.
        #[arg(long)]
        container: String,
        /// Timeout in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: i64,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Stop and remove a pod sandbox and its containers.
    PodDown {
        /// Pod sandbox id.
        #[arg(long)]
        pod: String,
    },
    /// Stop and remove every pod sandbox.
    Clean,
}

async fn connect(socket: &str) -> Result<Runtime> {
    let path = socket.to_string();
    let channel = Endpoint::try_from("http://[::]")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .with_context(|| format!("connect to containerd at {socket}"))?;
    Ok(RuntimeServiceClient::new(channel))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

async fn pod_up(
    rt: &mut Runtime,
    name: &str,
    namespace: &str,
    uid: &str,
    image: &str,
    log_dir: &str,
) -> Result<()> {
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: uid.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.to_string(),
        labels: HashMap::from([("app".to_string(), "seam-e2e".to_string())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    eprintln!(
        "RunPodSandbox {namespace}/{name}: {pod_id} ({:.1} ms)",
        ms(t0)
    );
    println!("POD_ID={pod_id}");
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner();
    let ip = status
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    if ip.is_empty() {
        bail!("pod sandbox {pod_id} has no IP in PodSandboxStatus");
    }
    println!("POD_IP={ip}");

    let container_config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".to_string(), "3600".to_string()],
        log_path: "sleeper.log".to_string(),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    };
    let t1 = Instant::now();
    let container_id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config),
            sandbox_config: Some(pod_config),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: container_id.clone(),
    })
    .await
    .context("StartContainer")?;
    eprintln!(
        "CreateContainer+StartContainer sleeper: {container_id} ({:.1} ms)",
        ms(t1)
    );
    println!("CONTAINER_ID={container_id}");
    Ok(())
}

async fn exec(rt: &mut Runtime, container: &str, timeout: i64, cmd: &[String]) -> Result<i32> {
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: container.to_string(),
            cmd: cmd.to_vec(),
            timeout,
        })
        .await
        .context("ExecSync")?
        .into_inner();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.exit_code)
}

async fn pod_down(rt: &mut Runtime, pod: &str) -> Result<()> {
    let containers = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.to_string(),
                ..Default::default()
            }),
        })
        .await
        .context("ListContainers")?
        .into_inner()
        .containers;
    for c in containers {
        if c.state == ContainerState::ContainerRunning as i32 {
            rt.stop_container(StopContainerRequest {
                container_id: c.id.clone(),
                timeout: 0,
            })
            .await
            .with_context(|| format!("StopContainer {}", c.id))?;
        }
        rt.remove_container(RemoveContainerRequest {
            container_id: c.id.clone(),
        })
        .await
        .with_context(|| format!("RemoveContainer {}", c.id))?;
    }
    let t0 = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .with_context(|| format!("StopPodSandbox {pod}"))?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .with_context(|| format!("RemovePodSandbox {pod}"))?;
    eprintln!("StopPodSandbox+RemovePodSandbox {pod} ({:.1} ms)", ms(t0));
    Ok(())
}

async fn clean(rt: &mut Runtime) -> Result<()> {
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items;
    let mut failed = Vec::new();
    for p in pods {
        if let Err(e) = pod_down(rt, &p.id).await {
            failed.push(format!("{}: {e:#}", p.id));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("clean-up failed: {}", failed.join("; "))
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let mut rt = connect(&cli.socket).await?;
    match cli.command {
        Cmd::Version => {
            let v = rt
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await
                .context("Version")?
                .into_inner();
            println!(
                "{} {} (CRI {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version
            );
        }
        Cmd::PodUp {
            name,
            namespace,
            uid,
            image,
            log_dir,
        } => pod_up(&mut rt, &name, &namespace, &uid, &image, &log_dir).await?,
        Cmd::Exec {
            container,
            timeout,
            cmd,
        } => return exec(&mut rt, &container, timeout, &cmd).await,
        Cmd::PodDown { pod } => pod_down(&mut rt, &pod).await?,
        Cmd::Clean => clean(&mut rt).await?,
    }
    Ok(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let work = tokio::time::timeout(Duration::from_secs(120), run(cli));
    match work.await {
        Ok(Ok(0)) => ExitCode::SUCCESS,
        Ok(Ok(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        Ok(Err(e)) => {
            eprintln!("seam-e2e-cri: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("seam-e2e-cri: timed out after 120 s");
            ExitCode::FAILURE
        }
    }
}
