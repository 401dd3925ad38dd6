//! The queue and the store, opened as `[queue]` and `[store]` say.

use std::sync::Arc;

use solstice_config::ServiceConfig;
use solstice_core::{AmqpQueue, JobQueue, MemoryQueue, Store};

use crate::ServiceError;

/// `[queue] url`: empty, the in-process queue; an `amqp://` or `amqps://` URL, RabbitMQ
/// (the connection is named after `name`, as the management UI shows it).
///
/// # Errors
/// [`ServiceError::Queue`] when RabbitMQ cannot be reached.
pub async fn open_queue(config: &ServiceConfig) -> Result<Arc<dyn JobQueue>, ServiceError> {
    if config.queue.is_in_process() {
        return Ok(Arc::new(MemoryQueue::new()));
    }
    let queue = AmqpQueue::builder(config.queue.url.clone())
        .connection_name(config.name.clone())
        .connect()
        .await
        .map_err(ServiceError::Queue)?;
    Ok(Arc::new(queue))
}

/// `[store] url`: SQLite (created if missing) or PostgreSQL.
///
/// # Errors
/// [`ServiceError::Store`] when it cannot be opened or migrated.
pub async fn open_store(config: &ServiceConfig) -> Result<Store, ServiceError> {
    Store::connect(&config.store.url).await.map_err(ServiceError::Store)
}
