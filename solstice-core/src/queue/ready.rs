//! The ready messages of one in-process queue, in the order they were published, with
//! requeued messages going back to where they were.
//!
//! RabbitMQ puts a requeued message back at its original position. Pushing requeued
//! messages to the front instead would reverse several that come back together (a
//! consumer that dies holding three events hands them back as 3, 2, 1), and a reporter
//! would see a job's events out of order.

use std::collections::VecDeque;

/// Where a message stands in its queue: the order of its first publish.
pub(super) type Position = u64;

/// Ready messages, oldest first.
#[derive(Debug)]
pub(super) struct Ready<T> {
    next: Position,
    items: VecDeque<(Position, T)>,
}

impl<T> Default for Ready<T> {
    fn default() -> Self {
        Self { next: 0, items: VecDeque::new() }
    }
}

impl<T> Ready<T> {
    /// Appends a newly published message.
    pub(super) fn push(&mut self, item: T) {
        self.items.push_back((self.next, item));
        self.next += 1;
    }

    /// Takes the oldest message, with its position for a later [`Ready::requeue`].
    pub(super) fn pop(&mut self) -> Option<(Position, T)> {
        self.items.pop_front()
    }

    /// Puts a message taken by [`Ready::pop`] back where it stood.
    pub(super) fn requeue(&mut self, position: Position, item: T) {
        let at = self.items.partition_point(|(p, _)| *p < position);
        self.items.insert(at, (position, item));
    }

    /// How many messages are ready.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Ready;

    #[test]
    fn requeued_messages_go_back_where_they_stood_in_any_order() {
        let mut ready = Ready::default();
        for n in 1..=5 {
            ready.push(n);
        }
        let taken: Vec<_> = (0..3).filter_map(|_| ready.pop()).collect();
        // Handed back in the reverse order, as dropped deliveries may be.
        for (position, n) in taken.into_iter().rev() {
            ready.requeue(position, n);
        }
        ready.push(6);
        let order: Vec<_> = std::iter::from_fn(|| ready.pop()).map(|(_, n)| n).collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6]);
        assert_eq!(ready.len(), 0);
    }
}
