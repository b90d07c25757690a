// A JSON list answer (GET /api/workers: `{"workers":[…]}`) as the control service renders it: one
// text per item, so that the HTTP API can write it in chunks (api/list-body.ts) without a text of
// the whole list ever being made. Here, apart from the API, because the control (control.ts) hands
// it out and must not depend on a front end.

/** `open` + items joined by `,` + `close`; `bytes` is its length in UTF-8, counted by whoever rendered it. */
export interface ListBody {
  readonly open: string
  readonly items: readonly string[]
  readonly close: string
  readonly bytes: number
}

/** The whole body as one text (answers that cannot be streamed, and tests). */
export function listBodyText(body: ListBody): string {
  return body.open + body.items.join(',') + body.close
}
