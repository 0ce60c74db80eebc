//! `worker-sd serve`: loads the model while the server already answers `/health`, then serves the image
//! routes through `worker-runtime`.

use artifacts_contract::WorkerKind;
use worker_model::device_kind;
use worker_runtime::{ServeArgs, Server, WorkerError, WorkerInfo};
use worker_sd::server::{SdBackend, routes};

use super::model::SdModelArgs;

/// Serves the model over HTTP.
#[derive(clap::Args, Debug)]
pub struct ServeCommand {
    #[command(flatten)]
    model: SdModelArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeCommand) -> anyhow::Result<()> {
    worker_runtime::init_tracing();
    let device = args.model.shared.device()?;
    let info = WorkerInfo::new(
        WorkerKind::Sd,
        args.model.name(),
        device_kind(&device),
        &args.serve,
    );
    let model = args.model.clone();
    worker_runtime::block_on(async move {
        let server = Server::<SdBackend>::new(info, args.serve.clone()).routes(routes);
        let listener = server.bind().await?;
        server
            .serve(listener, move || {
                model
                    .load_sized()
                    .map(|(pipeline, bytes)| SdBackend::new(pipeline, bytes))
                    .map_err(|e| WorkerError::Internal(format!("{e:#}")))
            })
            .await?;
        Ok(())
    })
}
