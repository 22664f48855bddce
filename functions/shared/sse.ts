/** Server-Sent Events framing. */

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  // Proxies such as nginx would otherwise buffer the stream.
  'X-Accel-Buffering': 'no',
} as const;

/** One event; `data` is JSON on one line, so no payload can break the framing. */
export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A comment line: ignored by clients, keeps idle connections open. */
export function sseComment(text: string): string {
  return `: ${text}\n\n`;
}
