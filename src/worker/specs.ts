import { execFile } from 'node:child_process'
import { readdirSync, readFileSync, statfsSync } from 'node:fs'
import { availableParallelism, cpus, freemem, totalmem } from 'node:os'
import type { WorkerSpecs, WorkerUsage } from '../shared/types.js'

const GB = 1024 ** 3

/** Real capacity of this machine: CPU cores, memory and disk in GB, NVIDIA GPU count (0 where none). */
export function readSpecs(diskPath: string): WorkerSpecs {
  const fs = statfsSync(diskPath)
  return {
    cpu: availableParallelism(),
    memory: round2(totalmem() / GB),
    storage: round2((fs.blocks * fs.bsize) / GB),
    gpu: countGpus(),
  }
}

function countGpus(): number {
  try {
    return readdirSync('/dev').filter((n) => /^nvidia\d+$/.test(n)).length
  } catch {
    return 0
  }
}

/**
 * Usage in percent, as heartbeats carry it. CPU is measured between two calls (the first call
 * measures since boot); memory counts page cache as available, as `free` does; GPU utilisation
 * comes from nvidia-smi when the machine has GPUs.
 */
export class UsageSampler {
  private lastCpu = cpuTimes()
  private gpuUsage = 0
  private gpuProbe: Promise<void> | null = null

  constructor(private readonly diskPath: string, private readonly gpus: number) {}

  sample(): WorkerUsage {
    const now = cpuTimes()
    const busy = now.busy - this.lastCpu.busy
    const total = now.total - this.lastCpu.total
    this.lastCpu = now
    if (this.gpus > 0 && !this.gpuProbe) this.gpuProbe = probeGpu().then((v) => { this.gpuUsage = v }, () => {}).finally(() => { this.gpuProbe = null })
    return {
      cpu: clampPercent(total > 0 ? (busy / total) * 100 : 0),
      memory: clampPercent(memoryUsedPercent()),
      storage: clampPercent(diskUsedPercent(this.diskPath)),
      gpu: clampPercent(this.gpuUsage),
    }
  }
}

function cpuTimes(): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const c of cpus()) {
    const t = c.times
    const all = t.user + t.nice + t.sys + t.idle + t.irq
    total += all
    busy += all - t.idle
  }
  return { busy, total }
}

function memoryUsedPercent(): number {
  try {
    const info = readFileSync('/proc/meminfo', 'utf8')
    const total = Number(/MemTotal:\s+(\d+)/.exec(info)?.[1])
    const available = Number(/MemAvailable:\s+(\d+)/.exec(info)?.[1])
    if (total > 0 && Number.isFinite(available)) return ((total - available) / total) * 100
  } catch {
    // Not Linux: fall back to what os reports.
  }
  return ((totalmem() - freemem()) / totalmem()) * 100
}

function diskUsedPercent(path: string): number {
  try {
    const fs = statfsSync(path)
    return fs.blocks > 0 ? ((fs.blocks - fs.bfree) / fs.blocks) * 100 : 0
  } catch {
    return 0
  }
}

function probeGpu(): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile('nvidia-smi', ['--query-gpu=utilization.gpu', '--format=csv,noheader,nounits'], { timeout: 2000 }, (err, stdout) => {
      if (err) return reject(err)
      const values = stdout.split('\n').map(Number).filter((n) => Number.isFinite(n) && stdout.trim() !== '')
      resolve(values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0)
    })
  })
}

const clampPercent = (v: number): number => (Number.isFinite(v) ? Math.min(100, Math.max(0, round2(v))) : 0)
const round2 = (v: number): number => Math.round(v * 100) / 100
