//! The `camstream` binary: parse the command line, load the configuration, start logging, and
//! hand over to the app. Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;

use camstream::cli::{Cli, Command};
use camstream::{app, check, config, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: before any thread (logging, GStreamer, tokio) exists; after the parse, which
    // exits for --help without running destructors (the FIFO would stay behind).
    let libcamera_log = unsafe { camstream::stream::libcamera_log::install() };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let loaded = cli
        .sources()
        .and_then(|sources| config::load(&sources, &env).map(|c| (c, sources)));
    let (config, sources) = match loaded {
        Ok(c) => c,
        Err(e) => {
            telemetry::print_error(format_args!("camstream: {e}"));
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let _libcamera_log = match libcamera_log {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!("libcamera's log is not read: {e}");
            None
        }
    };

    if cli.command == Some(Command::Check) {
        if let Err(e) = gst::init() {
            telemetry::print_error(format_args!(
                "camstream: GStreamer failed to initialise: {e}"
            ));
            return ExitCode::from(1);
        }
        return if check::run(&config) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            telemetry::print_error(format_args!(
                "camstream: cannot start the async runtime: {e}"
            ));
            return ExitCode::from(1);
        }
    };
    let origin = app::Origin { sources, env };
    let result = runtime.block_on(app::run(config, origin));
    // Do not wait for blocking tasks stuck in a wedged driver.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // The last lines (the shutdown, an error) are still queued for stderr.
    telemetry::flush(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %e, "camstream cannot start");
            telemetry::flush(std::time::Duration::from_millis(500));
            telemetry::print_error(format_args!("camstream: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
