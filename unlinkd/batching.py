"""When unlinkd sends: the batching rule of paper 5.5.2, as a pure state machine
(times are passed in, so it is tested without clocks).

Records up to ``tail`` exist in the journal; records below ``released`` may be
sent. A batch goes out when batch_max records are waiting (whole batches only),
or once no new record arrived for batch_delay seconds. max_age bounds the wait
under a steady trickle that never pauses for batch_delay.
"""


class Batcher:
    def __init__(self, batch_max, batch_delay, max_age=None, released=0):
        if batch_max < 1 or batch_delay < 0:
            raise ValueError("batch_max must be >= 1 and batch_delay >= 0")
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.max_age = max_age if max_age is not None else max(10 * batch_delay, 1.0)
        self.released = released
        self.tail = released
        self._last_arrival = None
        self._waiting_since = None

    @property
    def waiting(self):
        return self.tail - self.released

    def arrived(self, tail, now):
        """The journal now ends at ``tail``."""
        if tail <= self.tail:
            return
        if self.waiting == 0:
            self._waiting_since = now
        self.tail = tail
        self._last_arrival = now

    def rebase(self, oldest):
        """The journal's records start at ``oldest`` (a fresh journal's first
        number is far above 0): nothing waits below it."""
        if oldest > self.tail:
            self.released = self.tail = oldest
            self._last_arrival = self._waiting_since = None

    def release(self, now):
        """Advance ``released`` if a batch is due; returns whether it moved."""
        waiting = self.waiting
        if waiting == 0:
            return False
        if waiting >= self.batch_max:
            self.released += waiting // self.batch_max * self.batch_max
            if self.waiting:
                self._waiting_since = now
            return True
        if now >= self.deadline():
            self.released = self.tail
            return True
        return False

    def deadline(self):
        """When release() may next have something to do on its own (None: only
        new arrivals can change anything)."""
        if self.waiting == 0:
            return None
        return min(self._last_arrival + self.batch_delay, self._waiting_since + self.max_age)
