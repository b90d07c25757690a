// Piscina entry file of the dial pool; the thread's code is in src/master/reconnect/dial-thread.ts.
export { default } from '../src/master/reconnect/dial-thread.js'
