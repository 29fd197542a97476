//! `forkline run …` and `forkline keys …`: the catalog and key verbs.

use super::{KeysCommand, RunCommand, parse_config};
use crate::catalog::{ForkRequest, NewRun, RunStatus, RunUpdate};
use crate::engine::Engine;
use crate::error::Result;

pub(super) async fn keys_command(engine: &Engine, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create { project, read_only } => {
            let projects = crate::scope::Projects::from_patterns(&project)?;
            let (key, id) = crate::auth::create_key(engine, &projects, read_only).await?;
            println!("{key}");
            eprintln!(
                "key {id} for {}{} created; it is shown only once",
                projects.describe(),
                if read_only { ", read-only" } else { "" }
            );
        }
        KeysCommand::List => {
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            };
            println!("id\tscope\taccess\tcreated\tlast_used\trevoked");
            for k in crate::auth::list_keys(engine).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.projects.describe(),
                    if k.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    when(Some(k.created_at)),
                    when(k.last_used),
                    when(k.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = crate::auth::revoke_key(engine, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub(super) async fn run_command(engine: &Engine, cmd: RunCommand) -> Result<()> {
    let run = match cmd {
        RunCommand::Create {
            project,
            name,
            config,
            tags,
        } => {
            engine
                .create_run(NewRun {
                    project,
                    name,
                    config: parse_config(config.as_deref())?,
                    tags,
                    external_id: None,
                })
                .await?
        }
        RunCommand::Fork {
            run,
            step,
            name,
            config,
            no_inherit_config,
            inherit_tags,
            tags,
        } => {
            let mut req = ForkRequest::new(run, step);
            req.name = name;
            req.config = parse_config(config.as_deref())?;
            req.inherit_config = !no_inherit_config;
            req.inherit_tags = inherit_tags;
            req.tags = tags;
            let fork = engine.fork_run(req).await?;
            println!(
                "id={} display_id={} parent_id={} parent_display_id={} fork_step={}",
                fork.run.id,
                fork.run.display_id,
                fork.parent.id,
                fork.parent.display_id,
                fork.fork_step
            );
            return Ok(());
        }
        RunCommand::Status { run, status } => {
            let status: RunStatus = status.parse()?;
            engine.update_run(&run, RunUpdate::Status(status)).await?
        }
        RunCommand::Resume { run } => engine.update_run(&run, RunUpdate::Resume).await?,
        RunCommand::Config { run, config } => {
            engine
                .update_run(&run, RunUpdate::MergeConfig(parse_config(Some(&config))?))
                .await?
        }
        RunCommand::Tag { run, add, remove } => {
            if !add.is_empty() {
                engine.update_run(&run, RunUpdate::AddTags(add)).await?;
            }
            engine
                .update_run(&run, RunUpdate::RemoveTags(remove))
                .await?
        }
    };
    println!(
        "id={} display_id={} project={} status={}",
        run.id, run.display_id, run.project, run.status
    );
    Ok(())
}
