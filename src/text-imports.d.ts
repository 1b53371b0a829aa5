// Files imported `with { type: 'text' }` (migrations, dashboard assets) are their text.
declare module '*.sql' {
  const text: string
  export default text
}
declare module '*.css' {
  const text: string
  export default text
}
declare module '*.js' {
  const text: string
  export default text
}
