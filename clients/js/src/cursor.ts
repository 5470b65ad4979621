/**
 * Channel cursors for recovery after a reconnect.
 *
 * A message's `pos` is `<stream>:<offset>`: the offset is the decimal after
 * the last `:`, and everything before it names one totally ordered stream
 * (a Kafka `topic:partition`, or `~epoch` for positions this gateway
 * assigned). A channel's cursor is a comma list holding at most one pos per
 * stream: "everything of this channel up to that offset on that stream has
 * been seen". The server resumes from it when asked with `since`.
 */

/** The stream part of a pos: everything before its last `:`. */
export function streamOf(pos: string): string {
  const at = pos.lastIndexOf(":");
  return at < 0 ? "" : pos.slice(0, at);
}

/**
 * The cursor after a message at `pos`: the entry of the same stream is
 * replaced by `pos`, or `pos` is appended when the stream is new.
 */
export function advanceCursor(cursor: string, pos: string): string {
  if (pos === "" || pos.includes(",")) return cursor;
  const stream = streamOf(pos);
  const entries = cursor === "" ? [] : cursor.split(",");
  const at = entries.findIndex((entry) => streamOf(entry) === stream);
  if (at >= 0) entries[at] = pos;
  else entries.push(pos);
  return entries.join(",");
}
