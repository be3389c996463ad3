//! The status page `vigil up` serves at `/` until the web app exists:
//! cameras, and the topic plan with live numbers.

use axum::response::Html;
use axum::routing::get;
use bus::{KafkaConfig, TopicSpec};

pub fn router(kafka: KafkaConfig, plan: Vec<TopicSpec>, cameras: Vec<(String, String)>) -> axum::Router {
    axum::Router::new().route(
        "/",
        get(move || {
            let (kafka, plan, cameras) = (kafka.clone(), plan.clone(), cameras.clone());
            async move { Html(page(kafka, plan, cameras).await) }
        }),
    )
}

async fn page(kafka: KafkaConfig, plan: Vec<TopicSpec>, cameras: Vec<(String, String)>) -> String {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>vigil</title>\
         <style>body{font:14px system-ui;margin:2em}td,th{padding:2px 10px;text-align:left}</style>\
         <h1>vigil</h1><h2>Cameras</h2><table><tr><th>camera<th>source",
    );
    for (id, src) in &cameras {
        html += &format!("<tr><td>{}<td>{}", esc(id), esc(src));
    }
    html += "</table><h2>Topics</h2>";
    match tokio::task::spawn_blocking(move || bus::inspect::report(&kafka, &plan, &[])).await {
        Ok(Ok(report)) => {
            html += "<table><tr><th>topic<th>guarantee<th>partitions<th>records held<th>consumer groups (lag)";
            for t in report {
                let groups: Vec<String> = t.groups.iter().map(|g| format!("{} ({})", esc(&g.group), g.lag)).collect();
                html += &format!(
                    "<tr><td>{}<td>{}<td>{}<td>{}<td>{}",
                    esc(&t.name),
                    t.delivery,
                    t.partitions,
                    t.records,
                    groups.join(", ")
                );
            }
            html += "</table>";
        }
        Ok(Err(e)) => html += &format!("<p>broker not reachable: {}", esc(&e.to_string())),
        Err(e) => html += &format!("<p>{}", esc(&e.to_string())),
    }
    html + "<p><a href=/metrics>/metrics</a> · <a href=/healthz>/healthz</a>"
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
