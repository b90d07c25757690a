// Progress for long operator commands, on stderr so that stdout stays the command's answer. Only
// on a terminal: in a pipe or a log file a spinner is noise.

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']

export class Spinner {
  private timer: NodeJS.Timeout | null = null
  private frame = 0
  private readonly started = Date.now()

  constructor(
    private readonly text: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  start(): this {
    if (!this.stream.isTTY || this.timer) return this
    this.timer = setInterval(() => this.draw(), 100)
    this.draw()
    return this
  }

  stop(): void {
    if (!this.timer) return
    clearInterval(this.timer)
    this.timer = null
    this.stream.write('\r\x1b[2K')
  }

  private draw(): void {
    const s = Math.floor((Date.now() - this.started) / 1000)
    this.stream.write(`\r\x1b[2K${FRAMES[this.frame++ % FRAMES.length]} ${this.text} (${s}s)`)
  }
}
