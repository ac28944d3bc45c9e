// A background worker that does not listen on any port: the sample vassal `worker` runs it.
const every = Number(process.env.TICK_MS ?? 5000);
let n = 0;

const timer = setInterval(() => {
  n += 1;
  console.log(`tick ${n}: did some work`);
}, every);

process.on('SIGTERM', () => {
  clearInterval(timer);
  console.log(`SIGTERM after ${n} ticks: finishing up`);
  process.exit(0);
});
