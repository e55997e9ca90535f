"""The reading engine: the `tasks` stream's partitions read as many chains of pages at once.

Scale answers a listing of tasks one page at a time, each page naming the next, so one chain of
pages can only be read one request after another; a project of 10,000 tasks is 100 round trips.
The engine reads a partition (a project or batch, and a status) as several chains, windows of its
`completed_at` range, and several partitions at once, in `max_concurrency` reader threads, and
hands every page to the one thread that writes the sync's messages.

Modules:

- `plan`: a partition's windows (`PartitionPlan`), cut from what the reads show: pure, no threads.
- `engine`: the reader threads and the queue to the consumer (`ReadingEngine`).
- `http_pages`: the pages of a window over HTTP, a session per reader thread (`TaskPageSource`).
- `task_pages`: a page's body parsed for speed, each thread's turns kept as Scale sent them.
- `throttle`: how many requests are in flight at once, fewer while Scale answers 429.

Threads, and what each owns:

- **The sync's thread** (the SDK's, running `TasksStream._sync_records`) makes the engine and
  its page source, and is its one consumer: it takes every page from the engine's queue and
  emits its records (RECORD messages, the derived rows, the state), tells the plan what was
  emitted, and writes the partition's bookmark when the watermark moves. Nothing else writes a
  message or touches the SDK's state.
- **Reader threads** (`max_concurrency` of them, for the sync's life) each own a `PageReader`
  with its own HTTP session, and the window they are reading. They take windows from the plans
  and tell the plans what each page showed, under the engine's lock; they put pages on the
  queue. They call no SDK method: only the stream's own checks and parsing, which keep no state
  but Scale's clock and the request counters, both thread-safe.
- **The deadline watcher** (one per process, `tap_scale.transport`) shuts the socket of a request
  whose time is up. No thread is started per request.

Locks: the engine's one lock guards every partition's plan and what the readers are doing; the
throttle's condition guards the requests in flight; the queue and the semaphore of its places
(one page per reader, queued or being parsed) are thread-safe themselves.

How a page travels from the socket to stdout:

1. A reader takes the earliest window not yet read (`PartitionPlan.take`), earliest partition
   first, and asks Scale for its first page through its own session, which waits for a slot of
   the throttle, and for the deadline watcher to be told its deadline.
2. The answer is checked (its status, Scale's clock), then the reader waits for a place in the
   queue while it holds only the bytes Scale sent, then parses them (`task_pages`).
3. Under the lock, the plan hears what the page showed (`PartitionPlan.page`): the page is
   emitted and the chain goes on, or the window is cut up and the page set aside.
4. The page goes on the queue; after a window's last page, a "window read" marker follows it.
5. The sync's thread takes it, gives its place back, and emits its records through the SDK's
   per-record hooks and the message writer (`tap_scale.stops.ScaleMessageWriter`), which writes
   to stdout, or hands them to the process deriving the RLHF rows (`tap_scale.row_process`).
6. On a marker, the plan moves the partition's watermark past every window emitted; the sync's
   thread writes it as the partition's bookmark, in a STATE message, at once.
"""
