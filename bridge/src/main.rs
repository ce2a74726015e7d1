//! `shmstream-bridge publish|subscribe`: carries shmstream streams between hosts over Zenoh.
//! Exit status 0 after Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT), 1 on any error, with the
//! reason on stderr.

mod floor;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shmstream_bridge::{
    DEFAULT_LISTEN, DEFAULT_PREFIX, Endpoints, PublishOptions, SubscribeOptions,
};

#[derive(Debug, Parser)]
#[command(
    name = "shmstream-bridge",
    version,
    about = "Carries shmstream streams over Zenoh"
)]
struct Cli {
    /// Run every thread of the bridge (Zenoh's too) under SCHED_FIFO at this priority, 1-99
    /// (needs root, CAP_SYS_NICE or `ulimit -r`).
    #[arg(long, global = true, value_parser = clap::value_parser!(u8).range(1..=99))]
    rt_priority: Option<u8>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Puts local streams on `PREFIX/NAME`: the newest frame of each stream; every frame
    /// with --lossless (waits for streams that do not exist yet).
    Publish {
        /// Local stream names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Endpoints to listen on (default tcp/127.0.0.1:7447 unless --connect is given).
        #[arg(long)]
        listen: Vec<String>,
        /// Endpoints to connect to (retried until they answer).
        #[arg(long)]
        connect: Vec<String>,
        /// Key prefix.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        key_prefix: String,
        /// At most this many frames per second per stream (latest value at each slot).
        #[arg(long)]
        max_rate: Option<f64>,
        /// Every frame through the stream's history, with congestion control block.
        #[arg(long)]
        lossless: bool,
    },
    /// Mirrors remote streams into local ones of the same shape and dtype.
    Subscribe {
        /// Remote stream names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Endpoints to connect to (default tcp/127.0.0.1:7447 unless --listen is given).
        #[arg(long)]
        connect: Vec<String>,
        /// Endpoints to listen on.
        #[arg(long)]
        listen: Vec<String>,
        /// Key prefix the publisher uses.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        key_prefix: String,
        /// Local stream `P + NAME` mirrors remote `NAME`.
        #[arg(long, default_value = "")]
        local_prefix: String,
        /// History depth of the local streams it creates (read every frame with a cursor).
        #[arg(long, default_value_t = 0)]
        history: usize,
        /// Mirror into a local stream of that name that this run did not create (one made
        /// for the bridge on purpose, or an earlier run's mirror, continued after a
        /// restart); otherwise refused, as it may be the host's own stream.
        #[arg(long)]
        into_existing: bool,
    },
    /// The harness's Zenoh floor, publishing side (see `floor.rs`).
    #[command(hide = true)]
    FloorPut {
        key: String,
        #[arg(long)]
        connect: Vec<String>,
        #[command(flatten)]
        plan: floor::PutPlan,
    },
    /// The harness's Zenoh floor, subscribing side (see `floor.rs`).
    #[command(hide = true)]
    FloorGet {
        key: String,
        #[arg(long)]
        listen: Vec<String>,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Sends Zenoh's log (through `tracing`) to stderr, warnings and errors only unless
/// `RUST_LOG` says otherwise (e.g. `RUST_LOG=zenoh=debug`): without a subscriber, Zenoh's
/// errors (a connection closed because a frame could not be sent in time) go nowhere. Plain
/// text, and a failed write is ignored, as the bridge's own lines ([`say_line`]): a closed
/// stderr must not panic a Zenoh thread.
///
/// [`say_line`]: shmstream_bridge::say_line
fn log_zenoh_to_stderr() {
    use tracing_subscriber::EnvFilter;
    // Less Zenoh's warning that a session found no peer within its scouting delay: a
    // subscriber started before its publisher (the usual order) would print it every time.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,zenoh::net::runtime::orchestrator=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .log_internal_errors(false)
        .try_init();
}

fn main() -> ExitCode {
    shmstream_bridge::keep_freed_memory();
    log_zenoh_to_stderr();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
    };
    if let Some(p) = cli.rt_priority
        && let Err(e) = shmstream_bridge::run_real_time(p)
    {
        shmstream_bridge::say_line(format_args!("shmstream-bridge: error: {e}"));
        return ExitCode::from(1);
    }
    let stop = shmstream_bridge::stop_on_signals();
    let result = match cli.command {
        Command::Publish {
            names,
            mut listen,
            connect,
            key_prefix,
            max_rate,
            lossless,
        } => {
            if listen.is_empty() && connect.is_empty() {
                listen.push(DEFAULT_LISTEN.into());
            }
            shmstream_bridge::publish(
                &PublishOptions {
                    names,
                    endpoints: Endpoints { listen, connect },
                    prefix: key_prefix,
                    max_rate,
                    lossless,
                },
                stop,
            )
        }
        Command::Subscribe {
            names,
            mut connect,
            listen,
            key_prefix,
            local_prefix,
            history,
            into_existing,
        } => {
            if listen.is_empty() && connect.is_empty() {
                connect.push(DEFAULT_LISTEN.into());
            }
            shmstream_bridge::subscribe(
                &SubscribeOptions {
                    names,
                    endpoints: Endpoints { listen, connect },
                    prefix: key_prefix,
                    local_prefix,
                    history,
                    into_existing,
                },
                stop,
            )
        }
        Command::FloorPut { key, connect, plan } => floor::put(
            &key,
            &Endpoints {
                listen: vec![],
                connect,
            },
            &plan,
        ),
        Command::FloorGet { key, listen, out } => floor::get(
            &key,
            &Endpoints {
                listen,
                connect: vec![],
            },
            &out,
            stop,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            shmstream_bridge::say_line(format_args!("shmstream-bridge: error: {e}"));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `publish` is latest value unless `--lossless`: its help said "every frame".
    #[test]
    fn the_publish_help_says_latest_value_unless_lossless() {
        let cli = super::Cli::command();
        let publish = cli.find_subcommand("publish").unwrap();
        let about = publish.get_about().unwrap().to_string();
        assert!(
            about.contains("the newest frame of each stream; every frame with --lossless"),
            "{about}"
        );
    }
}
