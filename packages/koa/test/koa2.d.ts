// `koa2` is a pnpm alias of koa@2 installed for the tests; its API is the one @types/koa describes.
declare module 'koa2' {
  import Koa = require('koa')
  export = Koa
}
