import express from 'express'
const app = express()
app.get('/', (_req, res) => { res.send('hello world') })
const server = app.listen(0, '127.0.0.1', () => console.log(server.address().port))
process.on('SIGTERM', () => process.exit(0))
